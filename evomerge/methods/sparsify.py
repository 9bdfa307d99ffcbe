"""Pruning a task vector: magnitude top-k (TIES), magnitude band without outliers (Model Breadcrumbs),
random drop (DARE); and mergekit's L1 rescaling.

Counts follow mergekit 0.1.5 (`mergekit/sparsify.py`): TIES keeps k = max(1, int(density * n)) entries,
Breadcrumbs int(density * n), exactly, so the same parameters keep as many entries.

Ties in magnitude are common: bf16 agents give quantised task vectors (on the committed zoo, keeping
every entry tied with the k-th magnitude kept up to 4x k entries of a tensor). They are broken as
mergekit's code would break them if its sorts were stable (mergekit's argsort / sort are unstable, so
it leaves ties unspecified), over the row-major flat index:
  - TIES keeps the first k of a stable descending sort of |x|: among equal magnitudes at the k-th,
    the lowest flat indices are kept;
  - Breadcrumbs keeps positions [n_bottom, n_bottom + n_keep) of a stable ascending sort of |x|: among
    equal magnitudes the lower flat index counts as the smaller, so at the bottom edge the highest
    tied indices are kept and at the outlier edge the lowest.
The selection is built from exact operations only (counts, comparisons, ordered index lists), never
from an order that torch.sort / topk / kthvalue leave unspecified, so the kept set does not depend on
the device or the thread count (tests: thread counts; CPU against CUDA where a GPU is present).

Speed (the search merges hundreds of times): the threshold magnitude and the positions tied with it
come from a radix selection (methods/rank_cuts.py: histograms of the magnitudes' bits) instead of mergekit's
full argsort (`torch.quantile` fails above 2**24 elements), and masks are applied with float-only kernels (hardshrink, ceil, index_fill) because
boolean masks and torch.where cost 3-10x more per element on CPU. Each function returns a NEW tensor
(the caller may scale it in place) or None when nothing is pruned (density >= 1), so the caller can
use the task vector as it is.

Row blocks: the pruning is split into whole-tensor statistics (`magnitude_statistics`, `band_statistics`:
integer counts gathered over a tensor's row blocks, exact for any split) and an `apply` per block given its
flat offset; DARE's draws are keyed by the entry's flat index. So a tensor merged in row blocks prunes
exactly as the whole tensor does (evomerge/row_blocks.py), and the whole tensor is the one-block case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from evomerge.methods.keep_draws import keep_mask, stream_draws
from evomerge.methods.rank_cuts import RankCut, RankRequest, rank_cuts
from evomerge.methods.spec import BlockReader, OneBlock

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class TopK:
    """TIES' trim of one task vector, as whole-tensor statistics: keep the cut's entries (`cut` None: the
    tensor has no entries to keep: every entry becomes 0)."""

    cut: RankCut | None

    def apply(self, delta: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """A new tensor: the block of the task vector at flat `offset`, pruned."""
        return torch.zeros_like(delta) if self.cut is None else self.cut.apply(delta, offset)


@dataclass(frozen=True)
class Band:
    """Breadcrumbs' band of one task vector: the `top` cut's entries (None: every entry) minus the
    `outliers` cut's (None: none); `empty`: nothing is kept."""

    top: RankCut | None
    outliers: RankCut | None
    empty: bool = False

    def apply(self, delta: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.empty:
            return torch.zeros_like(delta)
        kept = delta.clone() if self.top is None else self.top.apply(delta, offset)
        if self.outliers is None:
            return kept
        # exact: x - x = 0, x - 0 = x; the outliers' cut applies to `kept` (equal to delta on the top
        # entries), its ties ranked by delta's magnitudes
        return kept.sub_(self.outliers.apply(kept, offset, ranked=delta))


def magnitude_statistics(reader: BlockReader, numel: int, densities: Sequence[float]) -> tuple[TopK | None, ...]:
    """Per task vector: its TIES trim (k = max(1, int(density * n)) largest |tau|, module docstring), or None
    when nothing is pruned (density >= 1), gathered over the blocks `reader` yields."""
    out: list[TopK | None] = [None] * len(densities)
    requests = []
    for t, density in enumerate(densities):
        if density >= 1:
            continue
        if density <= 0 or numel == 0:
            out[t] = TopK(None)
        else:
            requests.append(RankRequest(t, (max(1, int(density * numel)),), keep_low=True))
    for t, (cut,) in (rank_cuts(reader, requests) if requests else {}).items():
        out[t] = TopK(cut)
    return tuple(out)


def band_statistics(
    reader: BlockReader, numel: int, densities: Sequence[float], gammas: Sequence[float]
) -> tuple[Band | None, ...]:
    """Per task vector: its Breadcrumbs band (`outlier_band_prune`), or None when nothing is pruned."""
    out: list[Band | None] = [None] * len(densities)
    requests, shapes = [], {}
    for t, (density, gamma) in enumerate(zip(densities, gammas)):
        if density >= 1:
            continue
        n_keep = int(density * numel)
        if n_keep <= 0 or numel == 0:
            out[t] = Band(None, None, empty=True)
            continue
        n_bottom = max(0, numel - n_keep - int(gamma * numel))
        n_outliers = numel - n_bottom - n_keep
        # the n - n_bottom largest minus the n_outliers largest, each taking the highest indices among ties
        ranks = (n_keep,) if n_outliers == 0 else (n_outliers,) if n_bottom == 0 else (numel - n_bottom, n_outliers)
        shapes[t] = (n_outliers == 0, n_bottom == 0)
        requests.append(RankRequest(t, ranks, keep_low=False))
    for t, cuts in (rank_cuts(reader, requests) if requests else {}).items():
        no_outliers, no_bottom = shapes[t]
        out[t] = Band(cuts[0], None) if no_outliers else Band(None, cuts[0]) if no_bottom else Band(*cuts)
    return tuple(out)


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor | None:
    """Keep exactly k = max(1, int(density * n)) entries of largest |delta| (TIES 'trim'), zero the rest.

    Among entries tied in magnitude at the k-th, the lowest flat indices are kept (module docstring:
    mergekit's rule with a stable descending sort).
    When fewer than k entries are non-zero, all of them are kept (the rest of the k are zeros: which
    zeros changes nothing).
    """
    delta = delta.contiguous()  # flat indices of the ranking are row-major ones
    (trim,) = magnitude_statistics(OneBlock((delta,)), delta.numel(), (density,))
    return None if trim is None else trim.apply(delta)


def outlier_band_prune(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor | None:
    """Model Breadcrumbs: drop the gamma fraction of largest |delta|, then the smallest, keeping exactly
    n_keep = int(density * n) entries; None when density >= 1 (gamma is then ignored, as in mergekit).

    As in mergekit, the kept entries are positions [n_bottom, n_bottom + n_keep) of |delta| sorted in
    ascending order, n_bottom = max(0, n - n_keep - int(gamma * n)) (when density + gamma > 1 fewer
    outliers are dropped); the sort is stable (module docstring), so among equal magnitudes the lower
    flat index counts as the smaller. Computed as the n - n_bottom largest entries minus the
    n - n_bottom - n_keep largest, each of these two sets taking the highest flat indices among its ties.
    """
    delta = delta.contiguous()
    (band,) = band_statistics(OneBlock((delta,)), delta.numel(), (density,), (gamma,))
    return None if band is None else band.apply(delta)


def model_seed(seed: int, model_index: int) -> int:
    """A seed per (tensor seed, model): each model's drop mask is independent of the other models'
    parameters, so changing one model's density in a search leaves the others' masks unchanged."""
    x = (seed + (model_index + 1) * 0x9E3779B97F4A7C15) & MASK64  # splitmix64 finaliser
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def random_keep(delta: torch.Tensor, density: float, seed: int, offset: int = 0) -> torch.Tensor | None:
    """DARE: 1.0 where an entry is kept (with probability `density`), 0.0 where dropped; a new float32
    tensor of delta's shape on delta's device, or None when density >= 1. `delta` is the block of a
    tensor that starts at flat entry `offset` (0: a whole tensor).

    Kept iff u < density for one uniform draw u per entry, keyed by (seed, the entry's flat index in the
    whole tensor), so a row block draws its own part of the whole tensor's mask: on the CPU from
    `keep_draws.keep_mask` (numpy SFC64 streams, several threads), on a GPU from torch's generator on
    that device, in the same streams (`keep_draws.stream_draws`). The two devices draw different (equally
    distributed) masks for the same seed. For one seed the masks are nested across densities: an entry
    kept at density p stays kept at any p' > p.
    """
    if density >= 1:
        return None
    if delta.device.type == "cpu":
        return keep_mask(delta.numel(), density, seed, offset).view(delta.shape)
    draw = stream_draws(delta.numel(), seed, offset, delta.device)
    # ceil(density - u) is 1 when u < density, else 0 (or -0.0): a float mask without a bool pass
    return draw.neg_().add_(density).ceil_().view(delta.shape)


def random_mask(delta: torch.Tensor, density: float, seed: int, offset: int = 0) -> torch.Tensor:
    """`random_keep` as a boolean mask (all True when density >= 1)."""
    keep = random_keep(delta, density, seed, offset)
    return torch.ones_like(delta, dtype=torch.bool) if keep is None else keep > 0


def l1_rescale(delta: torch.Tensor, pruned: torch.Tensor, eps: float = 1e-7) -> float:
    """mergekit's `rescale` (RescaleNorm.l1): the factor that gives the pruned task vector the L1 norm
    of the whole one; 1 when either norm is below `eps` (as mergekit)."""
    before = float(torch.linalg.vector_norm(delta, 1))  # one pass, no |delta| tensor
    after = float(torch.linalg.vector_norm(pruned, 1))
    if before < eps or after < eps:
        return 1.0
    return before / after
