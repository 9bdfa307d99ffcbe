"""Task vectors and the RAM paper's change statistics (arXiv 2601.13572, §4, Eqs. 1, 2, 6 and App. E).

Pure functions over tensors and counts, no I/O: the engine uses `overlap_counts` for RAM+'s
whole-model statistics pass, `evomerge analyze` uses the same functions for its tables, and the
merge methods use `rho` and the lambda rules.

Vocabulary (paper §4.1): a task vector tau_t = theta_t - theta_base; agent t *changed* coordinate i
when |tau_t,i| > epsilon (strict, absolute, element-wise; Eq. 1); c_i = number of agents that
changed i. A change is *unique* when c_i == 1 and *shared* when c_i >= 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from evomerge.methods.spec import GlobalOverlap

# Agents are encoded as bits of one integer per coordinate (see `change_patterns`): 2**N histogram
# bins, summed in Python, so N stays small (RL agent merges have a handful of agents).
MAX_AGENTS = 16


def task_vectors(base: torch.Tensor, models: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """tau_t = model_t - base, in float32."""
    base32 = base.float()
    return [m.float() - base32 for m in models]


def change_masks(deltas: Sequence[torch.Tensor] | torch.Tensor, epsilon: float) -> torch.Tensor:
    """Eq. 1: m_t,i = |tau_t,i| > epsilon. Returns a bool tensor of shape (N, *shape)."""
    return torch.stack([d.abs() > epsilon for d in deltas])


def _pattern_dtype(n_agents: int) -> torch.dtype:
    if n_agents < 1:
        raise ValueError("change statistics need at least one task vector")
    if n_agents > MAX_AGENTS:
        raise ValueError(f"change statistics support at most {MAX_AGENTS} agents, got {n_agents}")
    return torch.uint8 if n_agents <= 8 else (torch.int16 if n_agents <= 15 else torch.int32)


def change_patterns(deltas: Sequence[torch.Tensor] | torch.Tensor, epsilon: float) -> list[int]:
    """Histogram of change patterns: entry p counts the coordinates changed by exactly the agents
    whose bits are set in p (bit t = agent t). Length 2**N.

    One integer code per coordinate and one bincount: much cheaper than N x N mask comparisons.
    """
    n_agents = len(deltas)
    code = torch.zeros(deltas[0].shape, dtype=_pattern_dtype(n_agents), device=deltas[0].device)
    for t, delta in enumerate(deltas):
        # hardshrink keeps x where |x| > epsilon (strict), so != 0 is exactly Eq. 1's mask
        changed = torch.nn.functional.hardshrink(delta, epsilon).ne_(0)
        code.add_(changed.to(code.dtype), alpha=1 << t)
    return torch.bincount(code.reshape(-1), minlength=1 << n_agents).tolist()


@dataclass(frozen=True)
class OverlapCounts:
    """Per-agent change counts of one tensor, or (summed with +) of several / a whole model.

    changed[t]        entries agent t changed (|tau_t| > epsilon)
    unique[t]         ... that no other agent changed (c_i == 1)
    shared[t]         ... that at least one other agent changed too (c_i >= 2)
    shared_with[t][k] ... that exactly k OTHER agents changed too (k = 0..N-1; k = 0 is unique)
    patterns[p]       coordinates changed by exactly the agent set p (bit t = agent t)
    total             number of coordinates counted
    """

    changed: tuple[int, ...]
    unique: tuple[int, ...]
    shared: tuple[int, ...]
    shared_with: tuple[tuple[int, ...], ...]
    patterns: tuple[int, ...]
    total: int

    @property
    def n_agents(self) -> int:
        return len(self.changed)

    @classmethod
    def from_patterns(cls, patterns: Sequence[int]) -> "OverlapCounts":
        n_agents = (len(patterns) - 1).bit_length()
        if len(patterns) != 1 << n_agents or n_agents < 1:
            raise ValueError(f"a pattern histogram has 2**N entries (N >= 1), got {len(patterns)}")
        shared_with = [[0] * n_agents for _ in range(n_agents)]
        for pattern, count in enumerate(patterns):
            if not count:
                continue
            others = bin(pattern).count("1") - 1
            for t in range(n_agents):
                if pattern >> t & 1:
                    shared_with[t][others] += count
        changed = tuple(sum(row) for row in shared_with)
        unique = tuple(row[0] for row in shared_with)
        return cls(
            changed=changed,
            unique=unique,
            shared=tuple(c - u for c, u in zip(changed, unique)),
            shared_with=tuple(tuple(row) for row in shared_with),
            patterns=tuple(int(p) for p in patterns),
            total=int(sum(patterns)),
        )

    @classmethod
    def zero(cls, n_agents: int) -> "OverlapCounts":
        """The neutral element of +, to sum counts over tensors."""
        return cls.from_patterns([0] * (1 << n_agents))

    def __add__(self, other: "OverlapCounts") -> "OverlapCounts":
        if not isinstance(other, OverlapCounts):
            return NotImplemented
        if other.n_agents != self.n_agents:
            raise ValueError(f"cannot add overlap counts of {self.n_agents} and {other.n_agents} agents")
        return OverlapCounts.from_patterns([a + b for a, b in zip(self.patterns, other.patterns)])

    def density(self, t: int) -> float:
        """Fraction of all coordinates agent t changed (the paper's Fig. 2 'sparsity', really a density)."""
        return self.changed[t] / self.total if self.total else 0.0

    def rho(self, t: int) -> float | None:
        """Eq. 2 for agent t; None when it has no unique entries."""
        return rho(self.shared[t], self.unique[t])

    def as_global_overlap(self, epsilon: float) -> GlobalOverlap:
        """What the engine hands RAM+ methods in `TensorContext.global_overlap`."""
        return GlobalOverlap(epsilon=epsilon, shared=self.shared, unique=self.unique, total=self.total)


def overlap_counts(deltas: Sequence[torch.Tensor] | torch.Tensor, epsilon: float) -> OverlapCounts:
    """Change counts of one tensor's task vectors at `epsilon` (Eq. 1); sum results with +."""
    return OverlapCounts.from_patterns(change_patterns(deltas, epsilon))


def rho(shared: int, unique: int) -> float | None:
    """Eq. 2: overlap-unique ratio rho_t = #shared changes / #unique changes of agent t.

    None when the agent has no unique change: rho is undefined and the lambda rules return 1
    (the reference code divides by zero there; lambda only scales unique entries, so nothing is lost).
    """
    if unique < 0 or shared < 0:
        raise ValueError(f"counts must be non-negative, got shared={shared}, unique={unique}")
    return None if unique == 0 else shared / unique


def ram_plus_lambda(rho_t: float | None, r: float, alpha: float) -> float:
    """Eq. 6: lambda_t = 1 + r * clip(rho_t, 0, alpha); 1 when rho_t is undefined (no unique entries)."""
    if rho_t is None:
        return 1.0
    return 1.0 + r * min(max(rho_t, 0.0), alpha)


def ram_plus_soft_lambda(rho_t: float | None, r: float) -> float:
    """App. E (RAM+s): lambda_t = 1 + r * rho_t / (1 + rho_t); 1 when rho_t is undefined."""
    if rho_t is None:
        return 1.0
    if math.isinf(rho_t):
        return 1.0 + r
    return 1.0 + r * rho_t / (1.0 + rho_t)
