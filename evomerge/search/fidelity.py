"""Multi-fidelity promotion: score a candidate on a small slice first, promote it only while it could
still be non-dominated.

A rung is a data slice (an item limit per suite; None = the suite's whole split). A candidate scored on
rung r is promoted to rung r+1 unless some peer scored on the same rung beats it clearly: the peer's
pessimistic scores (mean - z*stderr) dominate the candidate's optimistic ones (mean + z*stderr). With
noisy agent benchmarks this keeps every candidate that a few more items could still put on the front,
in the spirit of successive halving but with a Pareto rule instead of a fixed keep-fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evomerge.search.pareto import dominates


@dataclass(frozen=True)
class Scored:
    """Objective means and standard errors of one candidate on one rung, oriented so that larger is better."""

    means: tuple[float, ...]
    stderrs: tuple[float, ...]


def could_be_nondominated(candidate: Scored, peers: Sequence[Scored], z: float) -> bool:
    """False when a peer's lower bounds dominate the candidate's upper bounds (it is clearly dominated)."""
    hi = np.asarray(candidate.means) + z * np.nan_to_num(np.asarray(candidate.stderrs))
    for peer in peers:
        lo = np.asarray(peer.means) - z * np.nan_to_num(np.asarray(peer.stderrs))
        if dominates(lo, hi):
            return False
    return True


@dataclass(frozen=True)
class FidelityLadder:
    """Item limits per rung, smallest first; the last rung is the full fidelity the front is built on."""

    limits: tuple[int | None, ...] = (None,)
    z: float = 1.0

    def __post_init__(self):
        if not self.limits:
            raise ValueError("a fidelity ladder needs at least one rung")
        finite = [x for x in self.limits if x is not None]
        if None in self.limits[:-1] or finite != sorted(set(finite)):
            raise ValueError(f"fidelity rungs must grow strictly and only the last may be the full split: {self.limits}")

    @property
    def top(self) -> int:
        return len(self.limits) - 1

    def promote(self, rung: int, candidate: Scored, peers: Sequence[Scored]) -> bool:
        return rung < self.top and could_be_nondominated(candidate, peers, self.z)
