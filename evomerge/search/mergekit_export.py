"""A recipe as a mergekit 0.1.5 configuration, when mergekit can express it.

mergekit applies one merge method to every tensor but lets each parameter vary by tensor through
conditional values (`[{filter: substring, value: v}, ..., {value: default}]`, first match wins). So a
recipe exports when all its rules use one method that mergekit has (`MethodSpec.mergekit_name`);
per-layer and per-module parameters become filters on the checkpoint's tensor names. Every
tensor's exported value is checked against the recipe before anything is returned.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

from evomerge.errors import RecipeError
from evomerge.recipe import MergeRecipe

# Our parameters that mergekit does not have, with the value mergekit's method behaves like.
IMPLICIT_IN_MERGEKIT = {"rescale_mode": "l1"}
_LAYER_PREFIX = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks|layer)\.\d+\.)")


class ExportError(RecipeError):
    """The recipe cannot be written as a mergekit configuration (the message says why)."""


def to_mergekit(recipe: MergeRecipe, tensor_names: Sequence[str]) -> dict[str, Any]:
    from evomerge.methods.registry import get_method

    methods = {recipe.rule_for(n).method for n in tensor_names}
    if len(methods) != 1:
        raise ExportError(f"mergekit merges every tensor with one method; this recipe uses {sorted(methods)}")
    method = methods.pop()
    spec = get_method(method)
    if spec.mergekit_name is None:
        raise ExportError(f"mergekit 0.1.5 has no method equivalent to '{method}'")
    if method == "slerp":
        raise ExportError("slerp recipes are not exported (mergekit's slerp takes its first model as the base)")
    rules = {n: recipe.rule_for(n) for n in tensor_names}
    shared: dict[str, Any] = {}
    per_model: list[dict[str, Any]] = [{} for _ in recipe.models]
    for p in spec.params:
        if p.name in IMPLICIT_IN_MERGEKIT:
            bad = sorted({str(r.parameters[p.name]) for r in rules.values()} - {IMPLICIT_IN_MERGEKIT[p.name]})
            if bad:
                raise ExportError(f"'{method}' with {p.name}={bad[0]} has no mergekit equivalent "
                                  f"(mergekit behaves like {p.name}={IMPLICIT_IN_MERGEKIT[p.name]})")
            continue
        if p.per_model:
            for i in range(len(recipe.models)):
                per_model[i][p.name] = _setting({n: r.parameters[p.name][i] for n, r in rules.items()})
        else:
            shared[p.name] = _setting({n: r.parameters[p.name] for n, r in rules.items()})
    config: dict[str, Any] = {"merge_method": spec.mergekit_name}
    if recipe.base is not None:
        config["base_model"] = recipe.base
    config["models"] = [{"model": m, "parameters": per_model[i]} if per_model[i] else {"model": m}
                        for i, m in enumerate(recipe.models)]
    if shared:
        config["parameters"] = shared
    config["dtype"] = "float32"  # evomerge computes in float32 too
    if recipe.dtype is not None:
        config["out_dtype"] = recipe.dtype
    if spec.randomized:
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
