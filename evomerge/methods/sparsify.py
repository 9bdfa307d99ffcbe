"""Pruning a task vector: magnitude top-k (TIES), magnitude band without outliers (Model Breadcrumbs),
random drop (DARE); and mergekit's L1 rescaling.

Counts follow mergekit 0.1.5 (`mergekit/sparsify.py`) so the same parameters keep the same entries.
Speed (the search merges hundreds of times): thresholds come from a radix selection (`kth_smallest`)
instead of mergekit's full argsort (`torch.quantile` fails above 2**24 elements), and masks are applied with
float-only kernels (hardshrink, ceil) because boolean masks and torch.where cost 3-10x more per
element on CPU. Each function returns a NEW tensor (the caller may scale it in place) or None when
nothing is pruned (density >= 1), so the caller can use the task vector as it is.
"""

from __future__ import annotations

import torch

from evomerge.methods.keep_draws import keep_mask

MASK64 = (1 << 64) - 1
_hardshrink = torch.nn.functional.hardshrink


# below this many entries torch.kthvalue is as fast as the two-level selection
_SMALL = 1 << 16


def kth_smallest(magnitude: torch.Tensor, ranks: list[int]) -> list[float]:
    """torch.kthvalue(magnitude.flatten(), r) for each 1-based rank r, for finite magnitudes >= 0, exact.

    Two-level radix selection, 1.4-2x faster than kthvalue on CPU: non-negative float32 values sort like
    their bit patterns, so one histogram of the top 16 bits finds the bucket holding rank r, and
    kthvalue runs on that bucket only (typically < 1 % of the entries). Ranks that fall on exact zeros
    (most entries of a sparse task vector) are answered from a count.
    """
    flat = magnitude.reshape(-1)
    if flat.numel() <= _SMALL or flat.dtype != torch.float32:
        return [float(torch.kthvalue(flat, r).values) for r in ranks]
    bits = flat.view(torch.int32)
    high = bits >> 16
    cumulative = torch.bincount(high, minlength=1 << 15).cumsum_(0)
    zeros = flat.numel() - int(torch.count_nonzero(bits))
    out = []
    for r in ranks:
        if r <= zeros:
            out.append(0.0)
            continue
        bucket = int(torch.searchsorted(cumulative, r))
        if bucket == 0:  # subnormal magnitudes around the rank: rare, take the plain path
            out.append(float(torch.kthvalue(flat, r).values))
            continue
        below = int(cumulative[bucket - 1])
        out.append(float(torch.kthvalue(flat[high == bucket], r - below).values))
    return out


def _below(value: float) -> float:
    """The largest float32 below `value` (> 0): hardshrink(x, below(v)) keeps exactly |x| >= v."""
    v = torch.tensor(value, dtype=torch.float32)
    return float(torch.nextafter(v, torch.zeros_like(v)))


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor | None:
    """Keep the k = max(1, int(density * n)) entries of largest |delta| (TIES 'trim'), zero the rest.

    Entries tied with the k-th largest magnitude are all kept (mergekit keeps an arbitrary k of them;
    exact ties between non-zero float32 magnitudes are rare). Zeros may count among the k; a zero adds
    nothing and has no sign, so that changes nothing.
    """
    if density >= 1:
        return None
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    (threshold,) = kth_smallest(delta.abs(), [n - k + 1])
    if threshold <= 0:
        return delta.clone()
    return _hardshrink(delta, _below(threshold))


def outlier_band_prune(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor | None:
    """Model Breadcrumbs: drop the gamma fraction of largest |delta|, then the smallest, keeping
    int(density * n) entries; None when density >= 1 (gamma is then ignored, as in mergekit).

    In ascending order of |delta| the kept ranks are [n_bottom, n_bottom + n_keep) with
    n_bottom = max(0, n - n_keep - int(gamma * n)): when density + gamma > 1 fewer outliers are dropped.
    """
    if density >= 1:
        return None
    n = delta.numel()
    n_keep = int(density * n)
    if n_keep <= 0 or n == 0:
        return torch.zeros_like(delta)
    n_bottom = max(0, n - n_keep - int(gamma * n))
    if n_bottom == 0:
        (upper,) = kth_smallest(delta.abs(), [n_keep])
        kept = delta.clone()
    else:
        lower, upper = kth_smallest(delta.abs(), [n_bottom, n_bottom + n_keep])
        kept = _hardshrink(delta, lower)
    # x - hardshrink(x, upper) keeps exactly |x| <= upper
    return kept.sub_(_hardshrink(kept, upper))


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
