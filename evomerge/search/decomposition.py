"""Decomposition of several objectives into scalar ones, as in MOEA/D (Zhang & Li 2007): augmented
Chebyshev scalarisations, their weight vectors, and the fixed normalisation they share (evomerge.search.cma)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Scalarization:
    """g_w(y) for maximised objectives y (smaller g is better)."""

    weights: np.ndarray
    ideal: np.ndarray
    scale: np.ndarray
    kind: str = "chebyshev"
    rho: float = 0.05

    def __call__(self, y: Sequence[float]) -> float:
        gap = self.weights * (self.ideal - np.asarray(y, float)) / self.scale
        if self.kind == "weighted_sum":
            return float(gap.sum())
        return float(gap.max() + self.rho * gap.sum())


def normalisation(reference_scores: Sequence[Sequence[float]] | None, n_obj: int) -> tuple[np.ndarray, np.ndarray]:
    """Ideal point and scales from the reference models' (maximised) scores: the spread of the references
    sets the scale, and the ideal sits one scale above the best of them. Without references: accuracies
    in [0, 1] are assumed (ideal 1, scale 1)."""
    if not reference_scores:
        return np.ones(n_obj), np.ones(n_obj)
    refs = np.asarray(reference_scores, float)
    hi, lo = refs.max(axis=0), refs.min(axis=0)
    scale = np.maximum(hi - lo, np.maximum(0.05 * np.abs(hi), 1e-3))
    return hi + scale, scale


def weight_vectors(first: Sequence[float], count: int, seed: int) -> np.ndarray:
    """`first` (normalised) and then count-1 seeded Dirichlet(1) draws on the simplex."""
    first = np.asarray(first, float)
    if first.sum() <= 0:
        first = np.ones_like(first)
    rows = [first / first.sum()]
    rng = np.random.default_rng([seed, 7919])
    rows += [rng.dirichlet(np.ones(len(first))) for _ in range(count - 1)]
    return np.vstack(rows)
