"""The genome's coordinates: a `Gene` (bounds or choices, its [0, 1] encoding, grid snapping), the `Group`
of tensors that shares genes, and the vector encoding of categorical genes used by CMA-ES."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evomerge.errors import SearchSpaceError


@dataclass(frozen=True)
class Gene:
    """One coordinate of the genome. Float genes have bounds (log: searched in log space);
    categorical genes have choices."""

    name: str
    group: str
    method: str | None  # None for the method-choice gene
    param: str | None
    model: int | None = None  # index of the model for per-model genes
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] | None = None
    grid: int | None = None

    @property
    def categorical(self) -> bool:
        return self.choices is not None

    def to_unit(self, value: Any) -> float:
        """Float genes: position in [0, 1] (log-scaled for log genes). Categorical: index / (k-1)."""
        if self.categorical:
            k = len(self.choices)
            return self.choices.index(value) / (k - 1) if k > 1 else 0.0
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return min(max(v, self.low), self.high)  # exp/log round-off must not leave the bounds

    def snap(self, value: Any) -> Any:
        """The value a recipe gets: the nearest grid point for grid genes, else the value itself."""
        if self.grid is None or self.categorical:
            return value
        steps = self.grid - 1
        return self.from_unit(round(self.to_unit(value) * steps) / steps)

    def check(self, value: Any) -> None:
        if self.categorical:
            if value not in self.choices:
                raise SearchSpaceError(f"gene '{self.name}': {value!r} is not one of {list(self.choices)}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SearchSpaceError(f"gene '{self.name}': expected a finite number, got {value!r}")
        if not self.low <= value <= self.high:
            raise SearchSpaceError(f"gene '{self.name}': {value} is outside [{self.low}, {self.high}]")

    def midpoint(self) -> Any:
        return self.choices[0] if self.categorical else self.from_unit(0.5)


@dataclass(frozen=True)
class Group:
    """A set of tensors sharing genes: a block of layers (optionally one module kind of it), or the
    tensors outside decoder layers."""

    name: str
    layers: tuple[int, int] | None  # inclusive range; None: tensors outside the decoder layers
    part: Literal["all", "attn", "rest"] = "all"

    def probe_tensor(self) -> str:
        """A tensor name this group (and no earlier override) covers; used to read a recipe back."""
        if self.layers is None:
            return "model.embed_tokens.weight"
        first = self.layers[0]
        return f"model.layers.{first}.self_attn.q_proj.weight" if self.part == "attn" else f"model.layers.{first}.mlp.up_proj.weight"

    def describe(self) -> str:
        if self.layers is None:
            return "embeddings, final norm, lm_head"
        lo, hi = self.layers
        span = f"layer {lo}" if lo == hi else f"layers {lo}-{hi}"
        return {"all": span, "attn": f"{span} attention", "rest": f"{span} MLP and norms"}[self.part]


def layer_blocks(num_layers: int, count: int) -> list[tuple[int, int]]:
    """`count` contiguous, nearly equal blocks covering 0..num_layers-1 (inclusive ranges)."""
    count = min(count, num_layers)
    edges = [(i * num_layers) // count for i in range(count + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(count)]


def write_option_scores(x: np.ndarray, offset: int, width: int, index: int) -> None:
    """A categorical gene's coordinates in a genome vector: 0.75 for the chosen option, 0.25 for the others."""
    x[offset:offset + width] = 0.25
    x[offset + index] = 0.75


def plain(v: Any) -> Any:
    """numpy scalars -> Python scalars, so recipes serialise to YAML/JSON cleanly."""
    return v.item() if isinstance(v, np.generic) else v
