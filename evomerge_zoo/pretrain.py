"""Supervised pretraining of the base: the three families' formats (correct and flawed replies) + generic text.

Each toy example is a suite prompt and a reply; with probability `flaw_rate` the reply is the
family's typical mistake. The base so learns both the skill and the slip, and its success rate
sits in the range where group-relative RL advantages carry signal. The loss is on the reply
tokens (the prompt's tokens weigh `prompt_weight`); generic text rows keep it a language model.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from evomerge_zoo.encoding import right_pad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    reply_start: int  # index of the first reply token (0: a generic-text row, every token counts)


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1400
    tokens_per_batch: int = 4096
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    prompt_weight: float = 0.0  # > 0 also trains on prompt tokens (and runs the output layer there)
    clip: float = 1.0


def lr_at(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batches(examples: Iterator[Example], tokens_per_batch: int, rng: random.Random,
            pool: int = 512) -> Iterator[list[Example]]:
    """Length-bucketed batches: a pool of examples sorted by length, cut into batches of ~tokens_per_batch."""
    while True:
        chunk = [next(examples) for _ in range(pool)]
        chunk.sort(key=lambda e: len(e.ids))
        out, current, longest = [], [], 0
        for ex in chunk:
            longest_if = max(longest, len(ex.ids))
            if current and longest_if * (len(current) + 1) > tokens_per_batch:
                out.append(current)
                current, longest_if = [], len(ex.ids)
            current.append(ex)
            longest = longest_if
        if current:
            out.append(current)
        rng.shuffle(out)
        yield from out


def batch_loss(model, batch: Sequence[Example], pad_id: int, prompt_weight: float) -> torch.Tensor:
    """Weighted next-token loss; the output layer runs only where a target has weight (most prompt tokens have none)."""
    ids, _ = right_pad([e.ids for e in batch], pad_id)
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    for i, e in enumerate(batch):
        weights[i, :len(e.ids)] = prompt_weight if e.reply_start else 1.0
        weights[i, e.reply_start:len(e.ids)] = 1.0
    # Rows are right padded, so causal attention alone keeps real tokens from seeing padding: no mask
    # is needed, and without one the attention runs the fast causal kernel.
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    targets, w = ids[:, 1:], weights[:, 1:]
    used = w > 0
    logits = model.lm_head(hidden[used])
    nll = F.cross_entropy(logits.float(), targets[used], reduction="none")
    return (nll * w[used]).sum() / w[used].sum().clamp_min(1.0)


def pretrain(model, examples: Iterator[Example], pad_id: int, settings: PretrainSettings, seed: int,
             progress: Callable[[int], None] | None = None) -> list[float]:
    """Train `model` in place; returns the loss of every step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98),
                                  weight_decay=settings.weight_decay)
    model.train()
    losses: list[float] = []
    stream = batches(examples, settings.tokens_per_batch, rng)
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = batch_loss(model, next(stream), pad_id, settings.prompt_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        losses.append(loss.item())
        if progress:
            progress(1)
        if step % 50 == 0:
            log.info("pretrain step %d loss %.3f", step, losses[-1])
    model.eval()
    return losses
