"""A recipe as a mergekit 0.1.5 configuration, when mergekit can express it.

mergekit applies one merge method to every tensor but lets each parameter vary by tensor through
conditional values (`[{filter: substring, value: v}, ..., {value: default}]`, first match wins). So a
recipe exports when all its rules use one method that mergekit has (the table and the translations are
in evomerge/mergekit_compat/); per-layer and per-module parameters become filters on the checkpoint's
tensor names. Every tensor's exported value is checked against the recipe before anything is returned.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

from evomerge.mergekit_compat.export import ExportError, mergekit_values
from evomerge.recipe import MergeRecipe

__all__ = ["ExportError", "to_mergekit"]

_LAYER_PREFIX = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks|layer)\.\d+\.)")


def to_mergekit(recipe: MergeRecipe, tensor_names: Sequence[str]) -> dict[str, Any]:
    from evomerge.methods.registry import get_method

    methods = {recipe.rule_for(n).method for n in tensor_names}
    if len(methods) != 1:
        raise ExportError(f"mergekit merges every tensor with one method; this recipe uses {sorted(methods)}")
    method = methods.pop()
    # which mergekit method, and its parameter values per tensor (refuses what mergekit cannot compute)
    target, values = mergekit_values(method, {n: recipe.rule_for(n) for n in tensor_names})
    shared: dict[str, Any] = {}
    per_model: list[dict[str, Any]] = [{} for _ in recipe.models]
    for p in target.params:
        if p.scope == "per_model":
            for i in range(len(recipe.models)):
                per_model[i][p.name] = _setting({n: v[p.name][i] for n, v in values.items()})
        else:
            shared[p.name] = _setting({n: v[p.name] for n, v in values.items()})
    config: dict[str, Any] = {"merge_method": target.mergekit}
    models = [{"model": m, "parameters": per_model[i]} if per_model[i] else {"model": m}
              for i, m in enumerate(recipe.models)]
    if target.base == "endpoint":  # slerp: mergekit interpolates from base_model (t = 0) to the other model
        config["base_model"] = recipe.models[0]
        models = models[1:]
    elif target.base == "required":
        config["base_model"] = recipe.base
    # linear: no base_model (mergekit would add it to the inputs; evomerge's base is only a reference)
    config["models"] = models
    if shared:
        config["parameters"] = shared
    config["dtype"] = "float32"  # evomerge computes in float32 too
    if recipe.dtype is not None:
        config["out_dtype"] = recipe.dtype
    if get_method(method).randomized:
        config["random_seed"] = recipe.seed  # mergekit draws differently: same distribution, other masks
    return config


def _setting(values: dict[str, Any]) -> Any:
    """A scalar when every tensor has the same value, else mergekit conditionals (checked)."""
    counts = Counter(_key(v) for v in values.values())
    if len(counts) == 1:
        return _plain(next(iter(values.values())))
    outside = [v for n, v in values.items() if not _LAYER_PREFIX.match(n)]
    default = outside[0] if outside else max(values.values(), key=lambda v: counts[_key(v)])
    by_layer: dict[str, list[str]] = {}
    loose: list[str] = []
    for n in values:
        m = _LAYER_PREFIX.match(n)
        (by_layer.setdefault(m.group(1), []) if m else loose).append(n)
    conds: list[dict[str, Any]] = []
    for prefix, names in by_layer.items():
        layer_values = {_key(values[n]) for n in names}
        if len(layer_values) == 1:
            if _key(values[names[0]]) != _key(default):
                conds.append({"filter": prefix, "value": _plain(values[names[0]])})
        else:
            conds += [{"filter": n, "value": _plain(values[n])} for n in names if _key(values[n]) != _key(default)]
    conds += [{"filter": n, "value": _plain(values[n])} for n in loose if _key(values[n]) != _key(default)]
    conds.append({"value": _plain(default)})
    for n, v in values.items():  # mergekit's rule: the first condition whose filter is a substring of the name
        got = next(c["value"] for c in conds if "filter" not in c or c["filter"] in n)
        if _key(got) != _key(v):
            raise ExportError(f"cannot express the value of tensor '{n}' with mergekit filters")
    return conds


def _key(v: Any) -> Any:
    return repr(v)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
