"""Tiny generated Hugging Face checkpoints: a random base and 'agents' with sparse task vectors.

Used by the tests, the benchmarks and `evomerge demo-merge`: nothing is downloaded. Agents are
the base plus a sparse random update (a seeded Bernoulli mask of the given density times
Gaussian noise), which is the shape RL task vectors have (the RAM paper's Fig. 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_corpus() -> str:
    return resources.files("evomerge.assets").joinpath("corpus.txt").read_text(encoding="utf-8")


def build_tokenizer(corpus: str | None = None, vocab_size: int = 1000):
    """A byte-level BPE tokenizer trained on `corpus` (default: the committed corpus), with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    text = corpus if corpus is not None else default_corpus()
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2  # head_dim = 32: vLLM's CPU attention rejects 16
    num_key_value_heads: int = 1
    max_position_embeddings: int = 512


def tiny_config(arch: str, vocab_size: int, shape: TinyShape = TinyShape()):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=False, eos_token_id=0, pad_token_id=0, bos_token_id=None,
    )
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unknown tiny architecture {arch!r}; use 'qwen2' or 'llama'")


def build_tiny_family(
    out_dir: str | Path,
    agents: Sequence[str] = ("coding", "tool_use", "memory"),
    densities: Sequence[float] = (0.05, 0.45, 0.55),
    arch: str = "qwen2",
    shape: TinyShape = TinyShape(),
    delta_std: float = 2e-3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    tokenizer=None,
) -> dict[str, Path]:
    """Write `out_dir/base` and `out_dir/<agent>` checkpoints; return {name: path}."""
    from transformers import AutoModelForCausalLM

    if len(densities) != len(agents):
        raise ValueError("give one density per agent")
    out_dir = Path(out_dir)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    config = tiny_config(arch, len(tokenizer), shape)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(config).to(dtype)
    paths = {"base": out_dir / "base"}
    _save(base, tokenizer, paths["base"])
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for i, (name, density) in enumerate(zip(agents, densities)):
        state = {}
        for key, w in base_state.items():
            mask = torch.rand(w.shape, generator=gen) < density
            noise = torch.randn(w.shape, generator=gen) * delta_std
            state[key] = (w.float() + noise * mask).to(dtype)
        base.load_state_dict(state)
        paths[name] = out_dir / name
        _save(base, tokenizer, paths[name])
    base.load_state_dict(base_state)
    return paths


def _save(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
