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

    def block_operands(self, name: str, rows: Rows | None) -> "tuple[torch.Tensor, list[torch.Tensor]]":
        """(base, task vectors) of rows [start, stop) of one tensor (None: the whole tensor), float32,
        valid until the next call."""
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
    if spec.global_overlap_param is None or rule.parameters.get("rho_scope") != "tensor":
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
    names: Sequence[str] | None = None,
) -> Iterator[tuple[str, Rows | None, "torch.Tensor"]]:
    """(name, rows, float32 merged rows) for every float tensor, block by block where its rule allows
    (rows None: the whole tensor); non-float tensors pass through whole. Each result is valid until the next."""
    names = list(names if names is not None else source.tensor_names)
    rules = _rules(recipe, [n for n in names if source.is_float(n)])
    epsilons = {e for r in rules.values() if (e := _needs_global_overlap(r)) is not None}
    overlaps = cache.get(_BlocksAsTensors(source, workspace_bytes, n_operands), epsilons) if epsilons else {}
    for name in names:
        if not source.is_float(name):
            yield name, None, source.passthrough(name)
            continue
        rule = rules[name]
        blocks = row_blocks(source.shape(name), n_operands, workspace_bytes) if rule_row_blockable(rule) else None
        tensor_overlap = _tensor_overlap(source, name, rule, blocks) if blocks else None
        statistics = _block_statistics(source, name, rule, blocks) if blocks else None
        per_row = row_numel(source.shape(name))
        for rows in blocks or [None]:
            base, deltas = source.block_operands(name, rows)
            offset = rows[0] * per_row if rows else 0
            merged = merge_tensor(name, base, deltas, rule, recipe.seed, overlaps, tensor_overlap, offset, statistics)
            yield name, rows, merged
            del merged, base, deltas
