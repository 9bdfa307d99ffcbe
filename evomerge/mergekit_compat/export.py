"""Which mergekit 0.1.5 method and parameter values reproduce a recipe's rules (the export's translation).

`mergekit_values` takes the rule of every tensor, all with one evomerge method, and returns the mergekit
method and, per tensor, mergekit's parameter values; it refuses, naming the rule, what mergekit cannot
compute. Three translations are not one-to-one renames:
- `ram_plus` with `rho_scope: tensor` is mergekit's `ramplus_tl`; with `rho_scope: global` (the paper's
  whole-model rho) mergekit has no equivalent, unless r = 0 everywhere (then RAM+ is RAM: `ram`).
- DARE's `rescale_mode: inverse_density` (evomerge's default) multiplies each kept entry by 1/density;
  mergekit rescales to the L1 norm instead. Without normalization the factor is the same as a weight of
  weight/density with `rescale: false`, which mergekit can express; with `normalize: true` the divisor would
  change too, so that is refused. With `rescale: false` the mode is irrelevant.
- `linear` is written without `base_model` (mergekit would add it to the inputs) and `slerp` with its first
  model as `base_model` (mergekit interpolates from the base).
"""

from __future__ import annotations

from typing import Any, Mapping

from evomerge.errors import RecipeError
from evomerge.mergekit_compat.methods import SHARED_METHODS, SharedMethod, by_evomerge_name


class ExportError(RecipeError):
    """The recipe cannot be written as a mergekit configuration (the message says why)."""


def mergekit_values(method: str, rules: Mapping[str, Any]) -> tuple[SharedMethod, dict[str, dict[str, Any]]]:
    """(mergekit's method, {tensor: {mergekit parameter: value}}) for rules (MergeRule per tensor) of `method`."""
    params = {n: dict(r.parameters) for n, r in rules.items()}
    candidates = by_evomerge_name(method)
    if not candidates:
        raise ExportError(f"mergekit 0.1.5 has no method equivalent to '{method}' (it shares "
                          f"{', '.join(sorted({m.evomerge for m in SHARED_METHODS.values()}))} with evomerge)")
    if method == "ram_plus":
        return _ram_plus(params)
    target = candidates[0]
    if method in ("dare_ties", "dare_linear"):
        params = {n: _dare(n, p) for n, p in params.items()}
    else:
        for n, p in params.items():
            _check_fixed(target, n, p)
    return target, {n: {q.name: p[q.name] for q in target.params} for n, p in params.items()}


def _ram_plus(params: Mapping[str, dict[str, Any]]):
    scopes = {p["rho_scope"] for p in params.values()}
    if scopes == {"tensor"}:
        target = SHARED_METHODS["ramplus_tl"]
    elif all(p["r"] == 0 for p in params.values()):  # lambda_t = 1: RAM+ is RAM, whatever rho is
        target = SHARED_METHODS["ram"]
    else:
        n = next(n for n, p in params.items() if p["rho_scope"] == "global" and p["r"] != 0)
        raise ExportError(
            f"ram_plus with rho_scope: global (e.g. tensor '{n}') scales unique changes by rho counted over the "
            "whole model; mergekit 0.1.5 has only ramplus_tl, which counts rho inside each tensor (rho_scope: "
            "tensor). Search with rho_scope: {value: tensor} (or r = 0) to get a mergekit-exportable RAM+")
    return target, {n: {q.name: p[q.name] for q in target.params} for n, p in params.items()}


def _dare(tensor: str, p: dict[str, Any]) -> dict[str, Any]:
    if not p["rescale"] or p["rescale_mode"] == "l1":
        return p
    if p["normalize"]:
        raise ExportError(f"{tensor}: DARE with rescale_mode: inverse_density and normalize: true has no mergekit "
                          "equivalent (mergekit rescales kept entries to the L1 norm; use rescale_mode: l1)")
    # kept entries * (1/density) * weight == kept entries * (weight/density): the same sum, no rescale
    weight = tuple(w / d for w, d in zip(p["weight"], p["density"]))
    return {**p, "weight": weight, "rescale": False}


def _check_fixed(target: SharedMethod, tensor: str, p: Mapping[str, Any]) -> None:
    for name, value in target.fixed.items():
        if p.get(name) != value:
            raise ExportError(f"{tensor}: '{target.evomerge}' with {name}={p.get(name)} has no mergekit equivalent "
                              f"(mergekit's {target.mergekit} behaves like {name}={value})")
