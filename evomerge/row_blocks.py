"""Merging large tensors in row blocks, so the float32 workspace is bounded by a setting, not by the vocabulary.

The engine's workspace holds (agents + 1) float32 copies of the largest tensor: for Qwen2.5-0.5B's
151936 x 896 embedding and 3 agents, 2.2 GB; for a 7B embedding, 8.7 GB. A method whose spec says it
is `row_blockable` for a rule's parameters (element-wise methods; RAM+ with global counts, which arrive
in the context) gives rows [a, b) of the whole merge when it merges rows [a, b) of every operand, bit
for bit, so such a tensor is merged block by block in a workspace of `workspace_bytes`.

Methods that need whole-tensor statistics gather them in a first pass over the tensor's blocks, then
merge each block with them: a spec's `block_statistics` (TIES' and Breadcrumbs' magnitude ranks: integer
histograms, exact for any split) arrives in the block's context with the block's flat offset (which also
keys DARE's draws); RAM+ with `rho_scope: tensor` gets its per-tensor counts summed over the blocks
(`_tensor_overlap`). The engine's whole-tensor path runs the same statistics code on the tensor as one block.
Rules whose statistics are float sums (an L1 rescale, SLERP's norms; their rounding depends on the split)
are merged whole: their tensors still need the (agents + 1) x tensor workspace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

from evomerge.engine import OverlapCache, _needs_global_overlap, _rules, merge_tensor
from evomerge.methods.registry import get_method
from evomerge.recipe import MergeRecipe, MergeRule

if TYPE_CHECKING:
    import torch

Rows = tuple[int, int]  # [start, stop) along a tensor's first dimension


class BlockSource(Protocol):
    """A TensorSource that can also hand out the operands of a row block."""

    tensor_names: list[str]
    fingerprint: tuple[str, ...]

    def is_float(self, name: str) -> bool: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def block_operands(
        self, name: str, rows: Rows | None, check_finite: bool = True,
    ) -> "tuple[torch.Tensor, list[torch.Tensor]]":
        """(base, task vectors) of rows [start, stop) of one tensor (None: the whole tensor), float32,
        valid until the next call. `check_finite=False`: the caller checks the merge instead."""
        ...

    def check_operands(self, name: str, base: "torch.Tensor", deltas: "list[torch.Tensor]") -> None:
        """Raise naming the input that holds a NaN/inf among these operands (a merge of them was not finite)."""
        ...

    def passthrough(self, name: str) -> "torch.Tensor": ...


def row_numel(shape: Sequence[int]) -> int:
    """Entries per row (along the first dimension); a 1-D tensor has rows of one entry."""
    numel = 1
    for d in shape[1:]:
        numel *= d
    return numel


def row_blocks(shape: Sequence[int], n_operands: int, workspace_bytes: int) -> list[Rows] | None:
    """Row ranges whose float32 operands (n_operands rows each) fit in `workspace_bytes`; None when the
    whole tensor fits (or it has no rows to split). Every block has at least one row, the last may be short."""
    if len(shape) == 0 or shape[0] <= 1:
        return None
    per_row = n_operands * 4 * row_numel(shape)
    rows_per_block = max(1, workspace_bytes // max(per_row, 1))
    if rows_per_block >= shape[0]:
        return None
    return [(a, min(a + rows_per_block, shape[0])) for a in range(0, shape[0], rows_per_block)]


def rule_row_blockable(rule: MergeRule) -> bool:
    spec = get_method(rule.method)
    return spec.row_blockable is not None and bool(spec.row_blockable(rule.parameters))


class _BlocksAsTensors:
    """A TensorSource whose 'tensors' are row blocks: the engine's overlap pass (integer counts, which
    add up exactly) then runs over blocks without a whole-tensor workspace."""

    def __init__(self, source: BlockSource, workspace_bytes: int, n_operands: int):
        self.source = source
        self.fingerprint = source.fingerprint
        self._blocks: dict[str, tuple[str, Rows | None]] = {}
        for name in source.tensor_names:
            if not source.is_float(name):
                continue
            for rows in row_blocks(source.shape(name), n_operands, workspace_bytes) or [None]:
                self._blocks[f"{name}\x00{rows}"] = (name, rows)
        self.tensor_names = list(self._blocks)

    def is_float(self, key: str) -> bool:
        return True

    def operands(self, key: str):
        return self.source.block_operands(*self._blocks[key])


def _tensor_overlap(source: BlockSource, name: str, rule: MergeRule, blocks: list[Rows]):
    """The first pass of a two-pass merge: a method that counts changes within the tensor (RAM+ with
    rho_scope 'tensor') gets the whole tensor's counts, summed over its blocks (integers: exact)."""
    from evomerge.taskvectors import overlap_counts

    spec = get_method(rule.method)
    if not _counts_within_tensor(rule):
        return None
    epsilon = float(rule.parameters[spec.global_overlap_param])
    total = None
    for rows in blocks:
        _, deltas = source.block_operands(name, rows)
        counts = overlap_counts(deltas, epsilon)
        total = counts if total is None else total + counts
    return total.as_global_overlap(epsilon)


def _block_statistics(source: BlockSource, name: str, rule: MergeRule, blocks: list[Rows]):
    """The first pass of a two-pass merge: the method's whole-tensor statistics (`MethodSpec.block_statistics`),
    gathered over the tensor's blocks in row order."""
    spec = get_method(rule.method)
    if spec.block_statistics is None:
        return None
    shape = source.shape(name)
    per_row = row_numel(shape)

    def reader():
        for rows in blocks:
            yield rows[0] * per_row, source.block_operands(name, rows)[1]

    numel = shape[0] * per_row if shape else 1
    return spec.block_statistics(rule.parameters, numel, reader)


def merged_blocks(
    source: BlockSource, recipe: MergeRecipe, cache: OverlapCache, workspace_bytes: int, n_operands: int,
    names: Sequence[str] | None = None, helpers: Sequence[BlockSource] = (), cast_to: "torch.dtype | None" = None,
) -> Iterator[tuple[str, Rows | None, "torch.Tensor"]]:
    """(name, rows, float32 merged rows) for every float tensor, block by block where its rule allows
    (rows None: the whole tensor); non-float tensors pass through whole. Each result is valid until the next.

    `helpers`: more sources over the same inputs, each with its own workspace. With them, blocks are merged
    by a pool of threads (one per source, each taking whichever source is free) running ahead of the
    consumer; results still come in order, bit for bit the serial ones (a block's merge depends only on
    its rows, offset and its tensor's statistics). First passes (statistics, overlap counts) and whole
    tensors of rules that cannot be blocked run on `source` alone, once the blocks in flight are done
    (they may grow its workspace to the tensor). `cast_to`: merged float tensors come cast to this dtype,
    by the thread that merged them.
    """
    names = list(names if names is not None else source.tensor_names)
    rules = _rules(recipe, [n for n in names if source.is_float(n)])
    epsilons = {e for r in rules.values() if (e := _needs_global_overlap(r)) is not None}
    overlaps = cache.get(_BlocksAsTensors(source, workspace_bytes, n_operands), epsilons) if epsilons else {}

    def merge_block(block_source: BlockSource, name: str, rows: Rows | None, rule: MergeRule, tensor_overlap,
                    statistics) -> "torch.Tensor":
        # a method that turns any NaN/inf operand into a non-finite result is checked once, on its result
        late_check = get_method(rule.method).nonfinite_propagates
        base, deltas = block_source.block_operands(name, rows, check_finite=not late_check)
        offset = rows[0] * row_numel(block_source.shape(name)) if rows else 0
        merged = merge_tensor(name, base, deltas, rule, recipe.seed, overlaps, tensor_overlap, offset, statistics)
        if late_check and not bool(merged.sum().isfinite()):
            block_source.check_operands(name, base, deltas)
        return merged if cast_to is None else merged.to(cast_to)

    pool = _BlockPool([source, *helpers], merge_block) if helpers else None
    try:
        for name in names:
            if not source.is_float(name):
                if pool is not None:
                    yield from pool.drain()
                yield name, None, source.passthrough(name)
                continue
            rule = rules[name]
            blockable = rule_row_blockable(rule)
            blocks = row_blocks(source.shape(name), n_operands, workspace_bytes) if blockable else None
            if pool is not None and (not blockable or (blocks is not None and _has_first_pass(rule))):
                yield from pool.drain()  # `source` is needed alone (its workspace must be free), with every thread
                pool.alone()
            tensor_overlap = _tensor_overlap(source, name, rule, blocks) if blocks else None
            statistics = _block_statistics(source, name, rule, blocks) if blocks else None
            if pool is None or not blockable:
                for rows in blocks or [None]:
                    merged = merge_block(source, name, rows, rule, tensor_overlap, statistics)
                    yield name, rows, merged
                    del merged
                continue
            pool.parallel()
            for rows in blocks or [None]:
                yield from pool.submit((name, rows, rule, tensor_overlap, statistics))
        if pool is not None:
            yield from pool.drain()
    finally:
        if pool is not None:
            pool.close()


def _counts_within_tensor(rule: MergeRule) -> bool:
    """RAM+ with rho_scope 'tensor': its counts are the whole tensor's, gathered first (`_tensor_overlap`)."""
    return get_method(rule.method).global_overlap_param is not None and rule.parameters.get("rho_scope") == "tensor"


def _has_first_pass(rule: MergeRule) -> bool:
    """A blocked tensor of this rule needs a first pass over its blocks (`_tensor_overlap`, `_block_statistics`)."""
    return get_method(rule.method).block_statistics is not None or _counts_within_tensor(rule)


class _BlockPool:
    """Merges blocks on one thread per source, each job taking whichever source is free, at most two jobs
    per source in flight; `submit` and `drain` give back finished results in submission order.

    While jobs run, each torch operation is single-threaded (`parallel`): the pool's threads are the
    parallelism, and a block's operands stay in one core's cache. Work on `source` alone (first passes,
    whole tensors) gets torch's whole thread count back (`alone`): single-threaded, the whole-tensor
    L1-rescaled DARE merge took twice as long at 0.5B. The count is process-wide, switched only when the
    mode changes (~0.5 ms each) and restored by `close`."""

    def __init__(self, sources: Sequence[BlockSource], merge_block):
        import queue
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        import torch

        self.threads = torch.get_num_threads()
        self.single = False

        self.free: "queue.SimpleQueue[BlockSource]" = queue.SimpleQueue()
        for s in sources:
            self.free.put(s)
        self.merge_block = merge_block
        self.executor = ThreadPoolExecutor(len(sources), thread_name_prefix="evomerge-block")
        self.in_flight: deque = deque()
        self.limit = 2 * len(sources)

    def parallel(self) -> None:
        import torch

        if not self.single:
            torch.set_num_threads(1)
            self.single = True

    def alone(self) -> None:
        """Call with nothing in flight."""
        import torch

        if self.single:
            torch.set_num_threads(self.threads)
            self.single = False

    def _run(self, job):
        block_source = self.free.get()
        try:
            return self.merge_block(block_source, *job)
        finally:
            self.free.put(block_source)

    def submit(self, job) -> Iterator[tuple[str, Rows | None, "torch.Tensor"]]:
        self.in_flight.append((job[0], job[1], self.executor.submit(self._run, job)))
        while len(self.in_flight) >= self.limit:
            yield self._next()

    def drain(self) -> Iterator[tuple[str, Rows | None, "torch.Tensor"]]:
        while self.in_flight:
            yield self._next()

    def _next(self):
        name, rows, future = self.in_flight.popleft()
        return name, rows, future.result()

    def close(self) -> None:
        """After an error or an abandoned generator: no job still running (their results are dropped)."""
        for _, _, future in self.in_flight:
            future.cancel()
        self.executor.shutdown(wait=True)
        self.in_flight.clear()
        self.alone()
