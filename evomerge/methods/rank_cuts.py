"""The r largest magnitudes of a tensor, exactly, from statistics gathered over its row blocks.

TIES and Model Breadcrumbs keep a tensor's entries by magnitude rank (methods/sparsify.py for the rule
and its tie-break by flat index). A rank is a whole-tensor statistic, but one that combines exactly over
blocks, because it is built from integer counts only:

  pass 1, per block: the histogram of the top 16 bits of |x| (non-negative float32 values sort like
          their bit patterns, so the bucket holding the r-th largest follows from the summed counts),
          and the number of exact zeros;
  pass 2, per block: the histogram of the low 16 bits of the entries in that bucket; summed, it gives
          the r-th largest value bit for bit, how many entries are above it and how many are tied
          with it; per block, how many tied entries come before the block (for the by-index tie-break).

`RankCut.apply(x, offset)` then prunes one block given the block's flat offset: the merge of rows [a, b)
of every operand is rows [a, b) of the whole-tensor merge, bit for bit, and the workspace is bounded by
the block size (the statistics are 2^16 counts per block and agent, not per entry). A whole tensor is
the one-block case of the same code (`rank_cuts` with `OneBlock`), which also keeps the positions of the
threshold's bucket so it needs no second look at the tensor; below 2^16 entries kthvalue is as fast.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Sequence

import torch

from evomerge.methods.spec import BlockReader, OneBlock

HIGH_BUCKETS = 1 << 15  # top 16 bits of a float32 >= 0 (the sign bit is 0)
LOW_VALUES = 1 << 16
# below this many entries (one block) torch.kthvalue is as fast as the histograms
SMALL = 1 << 16
_hardshrink = torch.nn.functional.hardshrink


@dataclass(frozen=True)
class RankRequest:
    """Cuts wanted for one operand: the `ranks` largest of |deltas[operand]|, ties broken towards the
    lowest flat indices when `keep_low`, else the highest."""

    operand: int
    ranks: tuple[int, ...]
    keep_low: bool


@dataclass(frozen=True)
class RankCut:
    """The `rank` largest entries of |x| over a whole tensor: every entry above `threshold`, and
    `tied_kept` of the `tied_total` entries equal to it (the lowest flat indices when `keep_low`, else the
    highest). threshold 0: the rank includes every non-zero (which zeros are kept changes no value).

    `offsets[j]` is the flat offset of block j the statistics were gathered over, `tied_before[j]` the
    number of tied entries before it (tied_before[-1] = tied_total). `positions`: the tied entries' flat
    indices when the tensor was one block (else found again in the block when some must be dropped)."""

    threshold: float
    tied_total: int
    tied_kept: int
    keep_low: bool
    offsets: tuple[int, ...] = (0,)
    tied_before: tuple[int, ...] = (0, 0)
    positions: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, offset: int = 0, ranked: torch.Tensor | None = None) -> torch.Tensor:
        """A new tensor: x on the cut's entries within the block at flat `offset`, 0 elsewhere. `ranked` is the
        block the magnitudes came from (default x); x must equal it on the cut's entries and be smaller in
        magnitude elsewhere (e.g. a pruned copy of it)."""
        if self.threshold <= 0:
            return x.clone()
        x = x.contiguous()  # flat indices are row-major ones
        out = _hardshrink(x, _below(self.threshold, x.dtype))  # every |x| >= threshold
        j = bisect_right(self.offsets, offset) - 1
        if j < 0 or self.offsets[j] != offset:
            raise ValueError(f"block offset {offset} is not one of the blocks the cut was gathered over {self.offsets}")
        before, here = self.tied_before[j], self.tied_before[j + 1] - self.tied_before[j]
        # the ordinals (in flat order over the tensor) of this block's tied entries are [before, before + here)
        if self.keep_low:  # kept: ordinals [0, tied_kept)
            lo, hi = max(0, self.tied_kept - before), here
        else:  # kept: ordinals [tied_total - tied_kept, tied_total)
            lo, hi = 0, min(here, max(0, self.tied_total - self.tied_kept - before))
        if lo < hi:
            tied = self.positions
            if tied is None:
                source = (x if ranked is None else ranked).reshape(-1)
                tied = torch.nonzero(source.abs().view(torch.int32) == _bits(self.threshold)).view(-1)
            out.view(-1).index_fill_(0, tied[lo:hi], 0.0)
        return out


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest `dtype` value below `value` (> 0, a `dtype` value): hardshrink(x, below(v)) on a tensor
    of that dtype keeps exactly |x| >= v (hardshrink casts its threshold to the tensor's dtype)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


def _bits(value: float) -> int:
    return int(torch.tensor(value, dtype=torch.float32).view(torch.int32))


def _magnitude_bits(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        raise TypeError(f"magnitude ranks are defined on float32 tensors, got {x.dtype}")
    return x.reshape(-1).abs().view(torch.int32)


def high_histogram(high: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pass 1 of one block, given its magnitudes' `bits` and `high` = bits >> 16: (counts of the top 16 bits,
    number of exact zeros); both add over blocks."""
    return torch.bincount(high, minlength=HIGH_BUCKETS), bits.numel() - int(torch.count_nonzero(bits))


def low_histogram(high: torch.Tensor, bits: torch.Tensor, bucket: int, positions: bool = False):
    """Pass 2 of one block: counts of the low 16 bits of the non-zero entries whose top 16 bits are `bucket`
    (adds over blocks); with `positions`, also their flat indices in the block and low bits (ascending)."""
    if positions:
        where = torch.nonzero(high == bucket).view(-1)
        low = bits[where] & (LOW_VALUES - 1)
        if bucket == 0:  # exact zeros are counted apart
            nonzero = low != 0
            where, low = where[nonzero], low[nonzero]
        return torch.bincount(low, minlength=LOW_VALUES), where, low
    low = bits[high == bucket] & (LOW_VALUES - 1)
    if bucket == 0:
        low = low[low != 0]
    return torch.bincount(low, minlength=LOW_VALUES)


@dataclass(frozen=True)
class _Bucket:
    """Where the r-th largest lies after pass 1: its top-16-bit bucket, the entries above the bucket and
    the non-zero entries in it."""

    rank: int
    bucket: int
    above: int
    inside: int


def _locate(hist: torch.Tensor, zeros: int, n: int, rank: int) -> _Bucket | None:
    """The bucket of the `rank`-th largest of n magnitudes, or None when it is a zero (threshold 0)."""
    ascending = n - rank + 1  # its rank from the bottom
    if ascending <= zeros:
        return None
    cumulative = hist.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, ascending))
    above = n - int(cumulative[bucket])
    inside = int(hist[bucket]) - (zeros if bucket == 0 else 0)
    return _Bucket(rank, bucket, above, inside)


def _threshold(where: _Bucket, low_total: torch.Tensor) -> tuple[int, int, int]:
    """(low 16 bits of the threshold, entries of the tensor above it, entries equal to it)."""
    from_bottom = where.inside - (where.rank - where.above) + 1
    cumulative = low_total.cumsum(0)
    low = int(torch.searchsorted(cumulative, from_bottom))
    above = where.above + where.inside - int(cumulative[low])
    return low, above, int(low_total[low])


def _zero_cut(keep_low: bool, offsets: tuple[int, ...]) -> RankCut:
    return RankCut(0.0, 0, 0, keep_low, offsets, (0,) * (len(offsets) + 1))


def _as_float(bits: int) -> float:
    return float(torch.tensor(bits, dtype=torch.int32).view(torch.float32))


def rank_cuts(reader: BlockReader, requests: Sequence[RankRequest]) -> dict[int, tuple[RankCut, ...]]:
    """For each request, its cuts (one per rank, in order), from the blocks `reader` yields: a `OneBlock`
    (a whole tensor) or any reader of a tensor's row blocks in row order; both give the same cuts."""
    if isinstance(reader, OneBlock):
        return {q.operand: _whole_cuts(reader.deltas[q.operand], q) for q in requests}
    return _blocked_cuts(reader, requests)


def _whole_cuts(delta: torch.Tensor, request: RankRequest) -> tuple[RankCut, ...]:
    """One block: the histograms of `_blocked_cuts`, keeping the threshold's bucket positions."""
    flat = delta.reshape(-1)
    n = flat.numel()
    if n <= SMALL or flat.dtype != torch.float32:
        return tuple(_small_cut(flat.abs(), r, request.keep_low) for r in request.ranks)
    bits = _magnitude_bits(flat)
    high = bits >> 16
    hist, zeros = high_histogram(high, bits)
    cuts = []
    for rank in request.ranks:
        where = _locate(hist, zeros, n, rank)
        if where is None:
            cuts.append(_zero_cut(request.keep_low, (0,)))
            continue
        low_total, positions, low = low_histogram(high, bits, where.bucket, positions=True)
        low_value, above, tied = _threshold(where, low_total)
        threshold = _as_float((where.bucket << 16) | low_value)
        cuts.append(RankCut(threshold, tied, rank - above, request.keep_low, (0,), (0, tied),
                            positions[low == low_value]))
    return tuple(cuts)


def _small_cut(magnitude: torch.Tensor, rank: int, keep_low: bool) -> RankCut:
    n = magnitude.numel()
    threshold = magnitude.kthvalue(n - rank + 1).values
    if float(threshold) <= 0:
        return _zero_cut(keep_low, (0,))
    tied = torch.nonzero(magnitude == threshold).view(-1)
    above = int(torch.count_nonzero(magnitude > threshold))
    return RankCut(float(threshold), tied.numel(), rank - above, keep_low, (0,), (0, tied.numel()), tied)


def _blocked_cuts(reader: BlockReader, requests: Sequence[RankRequest]) -> dict[int, tuple[RankCut, ...]]:
    offsets: list[int] = []
    hist = {q.operand: torch.zeros(HIGH_BUCKETS, dtype=torch.int64) for q in requests}
    zeros = dict.fromkeys(hist, 0)
    n = 0
    for offset, deltas in reader():
        offsets.append(offset)
        for t in hist:
            bits = _magnitude_bits(deltas[t])
            h, z = high_histogram(bits >> 16, bits)
            hist[t] += h.cpu()
            zeros[t] += z
        n = offset + deltas[0].numel()
    offsets_t = tuple(offsets)
    located = {q.operand: [_locate(hist[q.operand], zeros[q.operand], n, r) for r in q.ranks] for q in requests}
    buckets = {t: sorted({w.bucket for w in ws if w is not None}) for t, ws in located.items()}
    # per operand and bucket: one low histogram per block (kept until the threshold is known: the tied
    # counts per block come from them)
    lows: dict[tuple[int, int], list[torch.Tensor]] = {(t, b): [] for t, bs in buckets.items() for b in bs}
    if lows:
        for _, deltas in reader():
            for t, bs in buckets.items():
                if bs:
                    bits = _magnitude_bits(deltas[t])
                    high = bits >> 16
                    for b in bs:
                        lows[(t, b)].append(low_histogram(high, bits, b).to("cpu", torch.int32))
    out = {}
    for q in requests:
        cuts = []
        for where in located[q.operand]:
            if where is None:
                cuts.append(_zero_cut(q.keep_low, offsets_t))
                continue
            per_block = lows[(q.operand, where.bucket)]
            low_value, above, tied = _threshold(where, torch.stack(per_block).sum(0, dtype=torch.int64))
            before = [0]
            for h in per_block:
                before.append(before[-1] + int(h[low_value]))
            threshold = _as_float((where.bucket << 16) | low_value)
            cuts.append(RankCut(threshold, tied, where.rank - above, q.keep_low, offsets_t, tuple(before)))
        out[q.operand] = tuple(cuts)
    return out
