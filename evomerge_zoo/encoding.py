"""Token ids for the zoo: suite prompts through the chat template, replies closed by <|im_end|>, padding.

Prompts are rendered exactly as the transformers backend renders them at evaluation time (chat
template with the generation prompt, no extra special tokens), so training and scoring see the
same ids.
"""

from __future__ import annotations

from typing import Sequence

import torch


def encode_prompt(tokenizer, prompt) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    text = tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def encode_reply(tokenizer, text: str) -> list[int]:
    """The reply's ids followed by <|im_end|>: the model learns to end its turn."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [end_of_turn_id(tokenizer)]


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (len(rows), longest); `side` "left" aligns rows on the right, "right" on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
            ids[i, cols] = torch.tensor(row, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding on the left (prompts for generation)."""
    return pad(rows, pad_id, "left")


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding on the right (training sequences)."""
    return pad(rows, pad_id, "right")
