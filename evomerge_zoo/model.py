"""The zoo's model: a small Qwen2 decoder, kept in float32 while training and stored in bfloat16.

Storing in bf16 is what makes the RL task vectors sparse, as in the RAM paper: training updates a
float32 master copy, and a weight whose accumulated update stays below half a bf16 step rounds
back to the base's stored value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from evomerge.synthetic import TinyShape, tiny_config


@dataclass(frozen=True)
class ZooShape:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4  # head_dim 32: the smallest vLLM's CPU attention accepts
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


QUICK_SHAPE = ZooShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1)


def new_model(tokenizer, shape: ZooShape, seed: int):
    """A freshly initialised float32 Qwen2ForCausalLM whose turn ends at <|im_end|> (or <|endoftext|>)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("qwen2", len(tokenizer), TinyShape(**shape.to_dict()))
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    config.eos_token_id = eos
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    return round_to_bf16(model)


def round_to_bf16(model):
    """Round every weight to its nearest bf16 value (in place, kept float32): training starts from what is stored."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


def save_checkpoint(model, tokenizer, path: Path) -> None:
    """Write a bf16 HF checkpoint (safetensors, config, generation config, tokenizer) to `path`."""
    import copy

    stored = copy.deepcopy(model).to(torch.bfloat16)
    path.mkdir(parents=True, exist_ok=True)
    stored.save_pretrained(path)
    tokenizer.save_pretrained(path)
