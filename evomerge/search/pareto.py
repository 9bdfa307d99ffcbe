"""Pareto dominance, non-dominated sorting and the exact hypervolume, for objectives that are maximised."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b: at least as good everywhere and strictly better somewhere (maximisation)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(a >= b) and np.any(a > b))


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of the points split into fronts: fronts[0] is the Pareto front, fronts[1] the next layer, ...

    Fast non-dominated sort (Deb et al. 2002, NSGA-II): O(M N^2), ample for search-sized archives.
    """
    pts = np.asarray(points, float)
    n = len(pts)
    if n == 0:
        return []
    ge = np.all(pts[:, None, :] >= pts[None, :, :], axis=2)
    gt = np.any(pts[:, None, :] > pts[None, :, :], axis=2)
    dom = ge & gt  # dom[i, j]: i dominates j
    dominated_by_count = dom.sum(axis=0)
    fronts: list[list[int]] = []
    current = [i for i in range(n) if dominated_by_count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in np.flatnonzero(dom[i]):
                dominated_by_count[j] -= 1
                if dominated_by_count[j] == 0:
                    nxt.append(int(j))
        current = sorted(nxt)
    return fronts


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point are all kept)."""
    fronts = non_dominated_sort(points)
    return fronts[0] if fronts else []


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by `points` and bounded below by `reference` (maximisation).

    Points that do not strictly beat the reference in every objective add nothing. Exact, by
    slicing along the last objective (HSO); fine for fronts of up to a few hundred points in <= 4-5
    objectives.
    """
    ref = np.asarray(reference, float)
    pts = np.asarray(points, float).reshape(-1, ref.size) - ref
    pts = pts[np.all(pts > 0, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(_hv_from_origin(_nondominated(pts)))


def _nondominated(pts: np.ndarray) -> np.ndarray:
    keep = np.ones(len(pts), bool)
    for i in range(len(pts)):
        if keep[i]:
            dominated = np.all(pts[i] >= pts, axis=1) & np.any(pts[i] > pts, axis=1)
            keep &= ~dominated
    # identical points add no volume; keep one of each
    return np.unique(pts[keep], axis=0)


def _hv_from_origin(pts: np.ndarray) -> float:
    """Hypervolume of boxes [0, p] for positive points."""
    d = pts.shape[1]
    if d == 1:
        return float(pts.max())
    if d == 2:
        order = np.argsort(-pts[:, 0])
        vol, best_y = 0.0, 0.0
        for x, y in pts[order]:
            if y > best_y:
                vol += x * (y - best_y)
                best_y = y
        return vol
    order = np.argsort(-pts[:, -1])
    pts = pts[order]
    vol = 0.0
    for i in range(len(pts)):
        top = pts[i, -1]
        bottom = pts[i + 1, -1] if i + 1 < len(pts) else 0.0
        if top > bottom:
            vol += (top - bottom) * _hv_from_origin(_nondominated(pts[: i + 1, :-1]))
    return vol
