"""Declarative description of a merge method: its parameters, their defaults and valid ranges.

A method is a pure function over float32 tensors plus a `MethodSpec`. The engine never looks
inside a method; it only asks the spec what the method needs (a base, a global statistics
pass, randomness) and calls `spec.merge(...)` once per tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from evomerge.errors import RecipeError


FLOAT32_MAX = 3.4028234663852886e38


def float32_scalar(value: float, what: str) -> float:
    """A Python number the merge hands to torch as a float32 scalar (an `alpha`, a factor). Each parameter fits
    float32, but products of them (weight x lambda / weight sum, a DARE rescale) may not: torch then fails
    with an opaque 'cannot be converted without overflow'. A RecipeError says which factor and what to change."""
    if not abs(value) <= FLOAT32_MAX:  # NaN too
        raise RecipeError(f"{what} = {value!r} does not fit float32 (|x| <= 3.4e38), the merge's arithmetic: "
                          "make the weights or lambda smaller (or the densities larger)")
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter.

    `per_model` parameters accept a scalar (broadcast to every model) or a list with one value
    per model; after `MethodSpec.resolve` they are always a tuple of length N.
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    per_model: bool = False
    choices: tuple[Any, ...] | None = None
    # open bounds: e.g. density must be > 0 but may equal 1
    low_inclusive: bool = True
    high_inclusive: bool = True

    def check(self, value: Any, where: str) -> Any:
        if self.choices is not None:
            if value not in self.choices:
                raise RecipeError(f"{where}: parameter '{self.name}' must be one of {list(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: parameter '{self.name}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise RecipeError(f"{where}: parameter '{self.name}' must be finite, got {value!r}")
        if abs(value) > FLOAT32_MAX:
            raise RecipeError(f"{where}: parameter '{self.name}' = {value!r} does not fit float32 (|x| <= 3.4e38), "
                              "the merge's arithmetic")
        too_low = self.low is not None and (value < self.low or (not self.low_inclusive and value == self.low))
        too_high = self.high is not None and (value > self.high or (not self.high_inclusive and value == self.high))
        if too_low or too_high:
            lo = "-inf" if self.low is None else f"{self.low}"
            hi = "inf" if self.high is None else f"{self.high}"
            lb = "[" if self.low_inclusive else "("
            hb = "]" if self.high_inclusive else ")"
            raise RecipeError(
                f"{where}: parameter '{self.name}' = {value} is outside its valid range {lb}{lo}, {hi}{hb}"
            )
        return value


@dataclass(frozen=True)
class GlobalOverlap:
    """Whole-model change counts per agent at one epsilon (the paper's Eq. 2 numerator/denominator).

    shared[t]: entries agent t changed that at least one other agent also changed (c_i >= 2).
    unique[t]: entries only agent t changed (c_i == 1).
    """

    epsilon: float
    shared: tuple[int, ...]
    unique: tuple[int, ...]
    total: int  # number of coordinates counted


@dataclass(frozen=True)
class TensorContext:
    """What a method may know about the tensor it merges besides the values."""

    name: str
    seed: int  # derived from the recipe seed and the tensor name: order-independent randomness
    global_overlap: GlobalOverlap | None = None  # set when the spec asks for it
    # this tensor's own overlap counts (RAM+ rho_scope 'tensor'), set by a caller that merges the tensor in
    # row blocks: gathered over every block in a first pass, so each block sees the whole tensor's counts
    tensor_overlap: GlobalOverlap | None = None
    # flat (row-major) index of the first entry of the operands within the whole tensor: 0 for a whole
    # tensor, rows[0] x entries per row for a row block (DARE's draws and the tie-breaks are keyed by it)
    offset: int = 0
    # what the spec's `block_statistics` gathered over the whole tensor (None: the method has none)
    statistics: Any = None


# a tensor's row blocks, in row order, each time it is called: (flat offset of the block, task vectors of
# the block (float32, one per model)); each block's tensors are valid until the next is read
BlockReader = Callable[[], Iterator[tuple[int, Sequence[torch.Tensor]]]]


@dataclass(frozen=True)
class OneBlock:
    """The BlockReader of a whole tensor (one block at offset 0): statistics code may use that it can
    look at the whole tensor at once."""

    deltas: Sequence[torch.Tensor]

    def __call__(self) -> Iterator[tuple[int, Sequence[torch.Tensor]]]:
        yield 0, self.deltas


# base (float32), deltas (float32, one per model, same shape as base), resolved params, context
MergeFn = Callable[[torch.Tensor, Sequence[torch.Tensor], Mapping[str, Any], TensorContext], torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    merge: MergeFn
    params: tuple[ParamSpec, ...] = ()
    requires_base: bool = True
    min_models: int = 1
    max_models: int | None = None
    randomized: bool = False
    # name of the epsilon parameter when the method needs the whole-model overlap statistics
    # (RAM+ with rho_scope=global); None when it does not
    global_overlap_param: str | None = None
    mergekit_name: str | None = None  # the same method in mergekit 0.1.5, if any
    paper: str = ""  # where the formula comes from
    extra: Mapping[str, Any] = field(default_factory=dict)
    # checks that involve several parameters at once (e.g. weights that sum to zero), run at the end
    # of `resolve` on the resolved values; raises RecipeError naming `where`
    check_params: Callable[[Mapping[str, Any], str], None] | None = None
    # True (for these resolved parameters) when merging rows [a, b) of every operand gives rows [a, b)
    # of the whole tensor's merge, bit for bit: element-wise methods, or methods whose only whole-tensor
    # statistics arrive in the context (RAM+'s global counts; its per-tensor counts in `tensor_overlap`,
    # which the row-block loop gathers first for a method with `global_overlap_param`). The resident merger then merges large
    # tensors in row blocks, bounding its workspace (evomerge.row_blocks). None: never (whole tensors).
    row_blockable: Callable[[Mapping[str, Any]], bool] | None = None
    # whole-tensor statistics the merge of a row block needs (e.g. TIES' k-th magnitude per model):
    # (resolved params, number of entries of the tensor, its blocks) -> the value `merge` finds in
    # `TensorContext.statistics`. Must give the same value for every split of the tensor into row blocks
    # (integer counts, not float sums). The engine calls it with `OneBlock` for a whole tensor and the
    # row-block loop over the tensor's blocks in a first pass, so both paths run the same code.
    block_statistics: Callable[[Mapping[str, Any], int, BlockReader], Any] | None = None
    # True when, for every parameter value, a NaN or inf anywhere in the base or a task vector makes the
    # merged tensor non-finite (sums and products of every operand entry: NaN and inf propagate, 0 * inf
    # is NaN) and the method leaves its operands as they were. A reader then checks the merged tensor,
    # one pass, instead of every operand (and, when it is not finite, the operands, to name the file).
    # Methods that select entries (TIES, DARE, RAM) can drop a NaN: False.
    nonfinite_propagates: bool = False

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, params: Mapping[str, Any], n_models: int, where: str) -> dict[str, Any]:
        """Validate user parameters, fill defaults, broadcast per-model values to tuples."""
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise RecipeError(
                f"{where}: method '{self.name}' has no parameter(s) {unknown}; "
                f"its parameters are {sorted(known) or 'none'}"
            )
        if n_models < self.min_models or (self.max_models is not None and n_models > self.max_models):
            need = f"{self.min_models}" if self.max_models == self.min_models else (
                f"at least {self.min_models}" if self.max_models is None else f"{self.min_models}-{self.max_models}")
            raise RecipeError(f"{where}: method '{self.name}' needs {need} model(s), got {n_models}")
        out: dict[str, Any] = {}
        for p in self.params:
            value = params.get(p.name, p.default)
            if p.per_model:
                values = list(value) if isinstance(value, (list, tuple)) else [value] * n_models
                if len(values) != n_models:
                    raise RecipeError(
                        f"{where}: parameter '{p.name}' of '{self.name}' has {len(values)} values "
                        f"but there are {n_models} models (give one value or one per model)"
                    )
                out[p.name] = tuple(p.check(v, where) for v in values)
            else:
                if isinstance(value, (list, tuple)):
                    raise RecipeError(f"{where}: parameter '{p.name}' of '{self.name}' takes one value, not a list")
                out[p.name] = p.check(value, where)
        if self.check_params is not None:
            self.check_params(out, where)
        return out
