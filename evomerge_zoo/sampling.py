"""Batched sampling of G completions per prompt with a shared prompt cache, and their log-probabilities.

Each prompt is run once; its key/value cache is repeated G times for the group's completions. The
same layout gives the training pass its gradients: log pi(completion | prompt) flows through the
shared prompt cache into every weight, exactly as a full forward over prompt + completion would
(RoPE attention depends on relative positions only, so left padding shifts nothing).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from evomerge_zoo.encoding import left_pad


@dataclass
class Rollouts:
    prompts: list[list[int]]  # P prompts (token ids)
    group: int  # G completions per prompt; completion row i belongs to prompt i // G
    tokens: torch.Tensor  # (P*G, T) sampled ids, pad after the end of turn
    mask: torch.Tensor  # (P*G, T) 1 on sampled tokens, the closing end-of-turn included
    texts: list[str]  # decoded completions, special tokens dropped


def _cache_keyword(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); use whichever this version's forward takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(model, cache=None, **inputs):
    """A forward that passes and returns the key/value cache under this transformers version's name."""
    if cache is not None:
        inputs[_cache_keyword(model)] = cache
    out = model(use_cache=True, **inputs)
    return out, getattr(out, "cache", None) or out.past_key_values


def _prefill(model, prompts: Sequence[Sequence[int]], pad_id: int, group: int):
    ids, mask = left_pad(prompts, pad_id)
    out, cache = _forward(model, input_ids=ids, attention_mask=mask, logits_to_keep=1)
    cache.batch_repeat_interleave(group)
    return out.logits[:, -1].repeat_interleave(group, dim=0), cache, mask.repeat_interleave(group, dim=0)


@torch.no_grad()
def sample_groups(model, tokenizer, prompts: Sequence[Sequence[int]], group: int, max_new_tokens: int,
                  temperature: float, generator: torch.Generator | None, stop_ids: Sequence[int]) -> Rollouts:
    """`group` completions per prompt at `temperature` (0 = greedy), each ending at a stop id or the budget."""
    pad_id = tokenizer.pad_token_id
    logits, cache, attention = _prefill(model, prompts, pad_id, group)
    rows = logits.shape[0]
    stops = torch.tensor(list(stop_ids), dtype=torch.long)
    done = torch.zeros(rows, dtype=torch.bool)
    tokens, mask = [], []
    for _ in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(dim=-1)
        live = ~done
        nxt = torch.where(live, nxt, torch.full_like(nxt, pad_id))
        tokens.append(nxt)
        mask.append(live.long())
        done = done | torch.isin(nxt, stops)
        if bool(done.all()):
            break
        attention = torch.cat([attention, live.long()[:, None]], dim=1)
        out, cache = _forward(model, cache, input_ids=nxt[:, None], attention_mask=attention)
        logits = out.logits[:, -1]
    tokens_t, mask_t = torch.stack(tokens, 1), torch.stack(mask, 1)
    texts = [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True) for row, m in zip(tokens_t, mask_t)]
    return Rollouts([list(p) for p in prompts], group, tokens_t, mask_t, texts)


def completion_logprobs(model, rollouts: Rollouts, pad_id: int) -> torch.Tensor:
    """log pi(token_t | prompt, tokens_<t) for every sampled token, (P*G, T), differentiable (0 on padding)."""
    first_logits, cache, attention = _prefill(model, rollouts.prompts, pad_id, rollouts.group)
    tokens, mask = rollouts.tokens, rollouts.mask
    logits = first_logits[:, None]
    if tokens.shape[1] > 1:
        out, _ = _forward(model, cache, input_ids=tokens[:, :-1],
                          attention_mask=torch.cat([attention, mask[:, :-1]], dim=1))
        logits = torch.cat([logits, out.logits], dim=1)
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return logp * mask
