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
come from a radix selection (`top_cuts`) instead of mergekit's full argsort (`torch.quantile` fails above
2**24 elements), and masks are applied with float-only kernels (hardshrink, ceil, index_fill) because
boolean masks and torch.where cost 3-10x more per element on CPU. Each function returns a NEW tensor
(the caller may scale it in place) or None when nothing is pruned (density >= 1), so the caller can
use the task vector as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evomerge.methods.keep_draws import keep_mask

MASK64 = (1 << 64) - 1
_hardshrink = torch.nn.functional.hardshrink


# below this many entries torch.kthvalue is as fast as the two-level selection
_SMALL = 1 << 16


@dataclass(frozen=True)
class Cut:
    """The `r` largest entries of a magnitude tensor: every entry above `threshold`, and `tied_kept` of
    `tied`, the flat indices (ascending) of the entries equal to it: the lowest ones when `keep_low`,
    else the highest. threshold 0 means the r entries include every non-zero (`tied` is then left
    empty: which zeros are kept changes no value)."""

    threshold: float
    tied: torch.Tensor
    tied_kept: int
    keep_low: bool

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A new tensor: x on the cut's entries, 0 elsewhere (x is the tensor the magnitudes came from,
        or any tensor equal to it on the cut's entries and smaller in magnitude elsewhere)."""
        if self.threshold <= 0:
            return x.clone()
        out = _hardshrink(x, _below(self.threshold, x.dtype))  # every |x| >= threshold
        n_dropped = self.tied.numel() - self.tied_kept
        dropped = self.tied[self.tied_kept:] if self.keep_low else self.tied[:n_dropped]
        if dropped.numel():
            out.view(-1).index_fill_(0, dropped, 0.0)
        return out


def _cut_from(flat: torch.Tensor, positions: torch.Tensor | None, values: torch.Tensor, rank: int,
              above_values: int, keep_low: bool) -> Cut:
    """The cut of the `rank` highest-ranked entries, given candidate `values` (at flat `positions`, all of
    `flat` when None) that hold the threshold, with `above_values` entries of `flat` above every candidate."""
    # the rank-th largest of the candidates is their (len - (rank - above_values) + 1)-th smallest
    threshold = torch.kthvalue(values, values.numel() - (rank - above_values) + 1).values
    if float(threshold) <= 0:
        return _zero_cut(flat, keep_low)
    equal = values == threshold
    above = above_values + int(torch.count_nonzero(values > threshold))
    tied = torch.nonzero(equal).view(-1)
    if positions is not None:
        tied = positions[tied]
    return Cut(float(threshold), tied, rank - above, keep_low)


def _zero_cut(flat: torch.Tensor, keep_low: bool) -> Cut:
    return Cut(0.0, flat.new_empty(0, dtype=torch.long), 0, keep_low)


def top_cuts(magnitude: torch.Tensor, ranks: list[int], keep_low: bool = True) -> list[Cut]:
    """The `Cut` of the r largest entries for each r in 1..n of `ranks`, for finite magnitudes >= 0; among
    entries tied at the r-th, the lowest flat indices when `keep_low`, else the highest.

    Two-level radix selection, 1.4-2x faster than kthvalue on the whole tensor on CPU: non-negative
    float32 values sort like their bit patterns, so one histogram of the top 16 bits finds the bucket
    holding the threshold, and the threshold, the count above it and the positions tied with it come
    from that bucket only (typically < 1 % of the entries). Thresholds that fall on exact zeros (most
    entries of a sparse task vector) are answered from a count.
    """
    flat = magnitude.reshape(-1)
    n = flat.numel()
    if n <= _SMALL or flat.dtype != torch.float32:
        return [_cut_from(flat, None, flat, r, 0, keep_low) for r in ranks]
    bits = flat.view(torch.int32)
    high = bits >> 16
    cumulative = torch.bincount(high, minlength=1 << 15).cumsum_(0)
    zeros = n - int(torch.count_nonzero(bits))
    out = []
    for r in ranks:
        ascending = n - r + 1  # the threshold's rank from the bottom
        if ascending <= zeros:
            out.append(_zero_cut(flat, keep_low))
            continue
        bucket = int(torch.searchsorted(cumulative, ascending))
        if bucket == 0:  # subnormal magnitudes around the threshold: rare, take the plain path
            out.append(_cut_from(flat, None, flat, r, 0, keep_low))
            continue
        positions = torch.nonzero(high == bucket).view(-1)  # ascending flat indices
        out.append(_cut_from(flat, positions, flat[positions], r, n - int(cumulative[bucket]), keep_low))
    return out


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest `dtype` value below `value` (> 0, a `dtype` value): hardshrink(x, below(v)) on a tensor
    of that dtype keeps exactly |x| >= v (hardshrink casts its threshold to the tensor's dtype)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor | None:
    """Keep exactly k = max(1, int(density * n)) entries of largest |delta| (TIES 'trim'), zero the rest.

    Among entries tied in magnitude at the k-th, the lowest flat indices are kept (module docstring:
    mergekit's rule with a stable descending sort).
    When fewer than k entries are non-zero, all of them are kept (the rest of the k are zeros: which
    zeros changes nothing).
    """
    if density >= 1:
        return None
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    delta = delta.contiguous()  # flat indices of the ranking are row-major ones
    (cut,) = top_cuts(delta.abs(), [k])
    return cut.apply(delta)


def outlier_band_prune(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor | None:
    """Model Breadcrumbs: drop the gamma fraction of largest |delta|, then the smallest, keeping exactly
    n_keep = int(density * n) entries; None when density >= 1 (gamma is then ignored, as in mergekit).

    As in mergekit, the kept entries are positions [n_bottom, n_bottom + n_keep) of |delta| sorted in
    ascending order, n_bottom = max(0, n - n_keep - int(gamma * n)) (when density + gamma > 1 fewer
    outliers are dropped); the sort is stable (module docstring), so among equal magnitudes the lower
    flat index counts as the smaller. Computed as the n - n_bottom largest entries minus the
    n - n_bottom - n_keep largest, each of these two sets taking the highest flat indices among its ties.
    """
    if density >= 1:
        return None
    n = delta.numel()
    n_keep = int(density * n)
    if n_keep <= 0 or n == 0:
        return torch.zeros_like(delta)
    n_bottom = max(0, n - n_keep - int(gamma * n))
    n_outliers = n - n_bottom - n_keep
    delta = delta.contiguous()  # flat indices of the ranking are row-major ones
    if n_outliers == 0:
        (band,) = top_cuts(delta.abs(), [n_keep], keep_low=False)
        return band.apply(delta)
    if n_bottom == 0:
        (outliers,) = top_cuts(delta.abs(), [n_outliers], keep_low=False)
        kept = delta.clone()
    else:
        top, outliers = top_cuts(delta.abs(), [n - n_bottom, n_outliers], keep_low=False)
        kept = top.apply(delta)
    # exact: x - x = 0, x - 0 = x; the outliers' cut applies to `kept` too (equal on the top entries)
    return kept.sub_(outliers.apply(kept))


def model_seed(seed: int, model_index: int) -> int:
    """A seed per (tensor seed, model): each model's drop mask is independent of the other models'
    parameters, so changing one model's density in a search leaves the others' masks unchanged."""
    x = (seed + (model_index + 1) * 0x9E3779B97F4A7C15) & MASK64  # splitmix64 finaliser
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def random_keep(delta: torch.Tensor, density: float, seed: int) -> torch.Tensor | None:
    """DARE: 1.0 where an entry is kept (with probability `density`), 0.0 where dropped; a new float32
    tensor of delta's shape on delta's device, or None when density >= 1.

    Kept iff u < density for one uniform draw u per entry, seeded with `seed`: on the CPU from
    `keep_draws.keep_mask` (numpy SFC64 streams, several threads), on a GPU from torch's generator on
    that device. The two devices draw different (equally distributed) masks for the same seed. For one
    seed the masks are nested across densities: an entry kept at density p stays kept at any p' > p.
    """
    if density >= 1:
        return None
    if delta.device.type == "cpu":
        return keep_mask(delta.numel(), density, seed).view(delta.shape)
    generator = torch.Generator(device=delta.device)
    generator.manual_seed(seed)
    draw = torch.rand(delta.shape, generator=generator, device=delta.device, dtype=torch.float32)
    # ceil(density - u) is 1 when u < density, else 0 (or -0.0): a float mask without a bool pass
    return draw.neg_().add_(density).ceil_()


def random_mask(delta: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    """`random_keep` as a boolean mask (all True when density >= 1)."""
    keep = random_keep(delta, density, seed)
    return torch.ones_like(delta, dtype=torch.bool) if keep is None else keep > 0


def l1_rescale(delta: torch.Tensor, pruned: torch.Tensor, eps: float = 1e-7) -> float:
    """mergekit's `rescale` (RescaleNorm.l1): the factor that gives the pruned task vector the L1 norm
    of the whole one; 1 when either norm is below `eps` (as mergekit)."""
    before = float(torch.linalg.vector_norm(delta, 1))  # one pass, no |delta| tensor
    after = float(torch.linalg.vector_norm(pruned, 1))
    if before < eps or after < eps:
        return 1.0
    return before / after
