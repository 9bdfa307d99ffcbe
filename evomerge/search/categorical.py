"""CatCMA's categorical part (Hamano et al., GECCO 2024): one categorical distribution per categorical gene,
sampled stratified and moved by the IGO step (used by evomerge.search.cma)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

FAILED = 1e6  # a failed evaluation ranks behind everything that produced numbers


class CategoricalDistributions:
    """One categorical distribution per categorical gene (CatCMA's categorical part, Hamano et al. 2024).

    `sample` draws a generation's options stratified: for each gene, the generation's uniform numbers are
    one per equal slice of [0, 1] (in random order), so every candidate's option is still distributed as
    q, but the generation's counts of each option are as close to count * q as they can be (variance
    reduction, in the spirit of mirrored and orthogonal sampling for evolution strategies).

    `update(options, fitness, importance)` is the information-geometric (IGO) step with the learning rate
    CMA-ES uses for its mean (c_m = 1): the better half of the candidates, ranked by fitness (smaller is
    better), get CMA-ES's log-rank weights, times their importance weights (failed candidates get none),
    and each gene's distribution becomes the weighted frequency of its options among them (for a
    categorical distribution the natural-gradient step of size 1 lands exactly there). Then CatCMA's
    margin lifts every option to at least (1 - 0.73^(1/n)) / (k - 1) (n genes, k options), taking the
    excess from the others in proportion, so no option is ever ruled out for good."""

    def __init__(self, widths: Sequence[int]):
        self.widths = [int(k) for k in widths]
        n = len(self.widths)
        self.q = [np.full(k, 1.0 / k) for k in self.widths]
        self.margin = [(1 - 0.73 ** (1 / n)) / (k - 1) if k > 1 else 0.0 for k in self.widths]

    def sample(self, count: int) -> np.ndarray:
        """(count, genes) option indices, drawn stratified with numpy's global generator."""
        u = (np.stack([np.random.permutation(count) for _ in self.widths], axis=1)
             + np.random.random((count, len(self.widths)))) / max(count, 1)
        out = np.zeros((count, len(self.widths)), int)
        for j, q in enumerate(self.q):
            out[:, j] = np.minimum(np.searchsorted(np.cumsum(q), u[:, j], side="right"), len(q) - 1)
        return out

    def log_probability(self, options: Sequence[int]) -> float:
        return float(sum(math.log(q[c]) for q, c in zip(self.q, options)))

    def update(self, options: Sequence[Sequence[int]], fitness: Sequence[float], importance: Sequence[float]) -> bool:
        """One step from these candidates; False (and no change) when they carry no ranking information."""
        n = len(fitness)
        mu = n // 2
        if mu < 1:
            return False
        order = sorted(range(n), key=lambda i: fitness[i])  # stable: ties keep the given order
        rank_weights = math.log((n + 1) / 2) - np.log(np.arange(1, mu + 1))
        weights = np.zeros(n)
        for r, i in enumerate(order[:mu]):
            weights[i] = rank_weights[r] * importance[i] if fitness[i] < FAILED else 0.0
        if weights.sum() <= 0:
            return False
        weights /= weights.sum()
        for j, q in enumerate(self.q):
            frequency = np.zeros(len(q))
            np.add.at(frequency, [o[j] for o in options], weights)
            m = self.margin[j]  # CatCMA's margin correction: lift to the margin, take the excess from the rest
            frequency = np.maximum(frequency, m)
            total = frequency.sum()
            if total > 1:
                frequency -= (total - 1) * (frequency - m) / (total - m * len(q))
            q[:] = frequency / frequency.sum()
        return True
