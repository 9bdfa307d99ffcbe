"""Which methods an experiment can only merge whole tensors with, asked of the method registry.

The memory plan bounds a worker's float32 workspace by `workspace_bytes` only when every rule the experiment
can produce is row-blockable (`MethodSpec.row_blockable(params)`, evomerge.row_blocks); one whole-tensor rule
grows the workspace to (agents + 1) rows of the largest tensor. The answer comes from the registry, so a
method that learns to merge in row blocks changes the plan without an edit here.

A rule's parameters range over a search space's genes (or a sweep's grid): each method is asked at every
corner of its genes (a searched number's low and high, every choice, a fixed value; per-model genes at the
same value for every model) and counts as row-blockable only if every corner is. Row-blockability is a
property like "every density is 1", decided by extreme values, so the corners settle it.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping

from evomerge.errors import EvomergeError
from evomerge.methods.registry import get_method

MAX_CORNERS = 4096  # more corners than this: treat the method as whole-tensor (the safe bound)


def rule_row_blockable(method: str, params: Mapping[str, Any], n_models: int) -> bool:
    """The registry's answer for one rule; a rule it cannot resolve counts as whole-tensor (the safe bound)."""
    spec = get_method(method)
    if spec.row_blockable is None:
        return False
    try:
        resolved = spec.resolve(dict(params), n_models, f"plan: method {method}")
    except (EvomergeError, ValueError, TypeError):
        return False
    return bool(spec.row_blockable(resolved))


def method_row_blockable(method: str, candidates: Iterable[Mapping[str, Any]], n_models: int) -> bool:
    return all(rule_row_blockable(method, params, n_models) for params in candidates)


def _gene_values(gene: Any) -> list[Any]:
    if gene.value is not None:
        return [gene.value]
    if gene.choices is not None:
        return list(gene.choices)
    return [v for v in (gene.low, gene.high) if v is not None]


def space_row_blockable(spec: Any, n_models: int) -> dict[str, bool]:
    """method -> every rule the search space (a SearchSpaceSpec) can give it is row-blockable."""
    out = {}
    for method, genes in spec.methods.items():
        names = list(genes)
        values = []
        for name in names:
            gene = genes[name]
            vals = _gene_values(gene) or [None]
            values.append([[v] * n_models if gene.per_model and v is not None else v for v in vals])
        combos = list(itertools.islice(itertools.product(*values), MAX_CORNERS + 1))
        if len(combos) > MAX_CORNERS:
            out[method] = False
            continue
        candidates = [{n: v for n, v in zip(names, combo) if v is not None} for combo in combos]
        out[method] = method_row_blockable(method, candidates, n_models)
    return out


def sweep_row_blockable(methods: Iterable[Any], n_models: int) -> dict[str, bool]:
    """method -> every grid point of every sweep entry (SweepMethod) using it is row-blockable."""
    out: dict[str, bool] = {}
    for entry in methods:
        grid = entry.grid or {}
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
        ok = method_row_blockable(entry.method, [{**entry.parameters, **p} for p in points], n_models)
        out[entry.method] = out.get(entry.method, True) and ok
    return out
