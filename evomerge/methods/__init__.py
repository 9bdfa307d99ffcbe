"""Merge methods: one file per family, pure functions over tensors; `registry.METHODS` lists them."""

# Part of every evaluation-cache key of a merged candidate: bump it whenever a method gives other
# tensors for the same recipe and inputs (e.g. another random stream for DARE), so that scores of the
# old tensors are never reused.
# 2: DARE's CPU masks come from numpy SFC64 streams (keep_draws.py) instead of torch's mt19937
# 3: TIES and Breadcrumbs keep exactly their count of entries; ties in magnitude go to the lower flat
#    index (sparsify.py) instead of every entry tied with the threshold being kept
# 4: DARE's GPU masks are drawn in the CPU's stream layout (keep_draws.stream_draws: one torch generator per
#    stream of 2^18 entries, keyed by (seed, stream)) so a row block draws its part of the whole mask; CPU
#    tensors of every method are unchanged
NUMERICS_VERSION = 4
