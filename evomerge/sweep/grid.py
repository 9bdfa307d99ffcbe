"""The sweep's grid: each method's points (the cartesian product of its grid values), and the choice of a
method's best point by its average over the block's objectives on the search split."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from evomerge.io.atomic import canonical_json
from evomerge.sweep.experiment import SweepMethod


def thin(values: Sequence[Any], most: int | None) -> list[Any]:
    """At most `most` values, evenly spaced and keeping both ends (a reduced grid for a quick run)."""
    values = list(values)
    if most is None or len(values) <= most:
        return values
    if most == 1:
        return values[:1]
    step = (len(values) - 1) / (most - 1)
    return [values[round(i * step)] for i in range(most)]


def expand_grid(method: SweepMethod, grid_max: int | None = None) -> list[dict[str, Any]]:
    """The grid's points, as the varied parameters of each: the cartesian product in the YAML's key order
    (the last key varies fastest). A method without a grid is one point with nothing varied."""
    keys = list(method.grid)
    axes = [thin(method.grid[k], grid_max) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(varied: Mapping[str, Any]) -> str:
    """{'lambda': 0.5, 'density': 0.2} -> 'lambda=0.5, density=0.2'."""
    return ", ".join(f"{k}={_value(v)}" for k, v in varied.items())


@dataclass(frozen=True)
class GridPoint:
    block: str
    label: str  # the method's row label in the YAML (TA, RAM+, ...)
    method: str
    varied: Mapping[str, Any]  # the grid's values at this point
    recipe: Mapping[str, Any]  # the full merge recipe (validated, as MergeRecipe.to_dict)

    @property
    def key(self) -> str:
        """Stable across runs and grid reductions: the block, the row and the varied values."""
        return f"{self.block}/{self.label}/{canonical_json(dict(self.varied))}"

    @property
    def items_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_") or "method"
        return f"{self.block}-{slug}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"


def choose_best(points: Sequence[GridPoint], averages: Mapping[str, float | None]) -> GridPoint | None:
    """The point with the highest average (by point key; None or NaN: not scored); the first on a tie."""
    best, best_avg = None, -math.inf
    for p in points:
        avg = averages.get(p.key)
        if avg is not None and math.isfinite(avg) and avg > best_avg:
            best, best_avg = p, avg
    return best
