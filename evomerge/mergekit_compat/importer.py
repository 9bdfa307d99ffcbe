"""A mergekit 0.1.5 YAML read as an evomerge recipe, with mergekit's meaning of every key.

A YAML mapping with `merge_method` is a mergekit file. mergekit resolves each parameter per tensor:
settings are looked up from highest to lowest precedence (for per-model parameters the model's
`parameters`, then the top level; for shared parameters the top level only), a setting is a scalar, a
gradient (a list of numbers interpolated over the decoder layers: t = layer / (layers - 1), t = 0 outside
the layers) or a list of conditionals `{filter: substring, value: v}` where the first filter contained in
the tensor name wins (no filter or `*` matches every tensor; no match falls through to the next source),
and a parameter nobody sets takes mergekit's default. This module evaluates exactly that for every tensor
of the checkpoint, then writes the result as a recipe (a top-level rule plus overrides for the tensors that
differ) and checks that the recipe gives every tensor the value mergekit would. Anything evomerge cannot
reproduce is refused with the key at fault.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from evomerge.errors import RecipeError
from evomerge.io.hub import is_hub_id
from evomerge.mergekit_compat.methods import MERGEKIT_ONLY, REQUIRED, SHARED_METHODS, MkParam, SharedMethod
from evomerge.recipe import _LAYER_INDEX, MODULE_TYPES, MergeRecipe, layer_index

TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
            "random_seed")
REFUSED_KEYS = {
    "slices": "layer slices (frankenmerges) have no evomerge equivalent",
    "modules": "per-module input definitions have no evomerge equivalent",
    "tokenizer": "tokenizer merging is not supported (evomerge copies the base's tokenizer)",
    "chat_template": "evomerge copies the base's chat template; it cannot set another",
}
DTYPES = ("float32", "float16", "bfloat16")


class MergekitImportError(RecipeError):
    """A mergekit configuration evomerge cannot reproduce (the message names the key)."""


def is_mergekit_config(data: Any) -> bool:
    """mergekit's files are told apart by their required `merge_method` key (evomerge's is `method`)."""
    return isinstance(data, Mapping) and "merge_method" in data


def recipe_from_mergekit(data: Mapping[str, Any], where: str = "mergekit config", *,
                         tensor_names: Sequence[str] | None = None, num_layers: int | None = None) -> MergeRecipe:
    """The evomerge recipe that merges like this mergekit configuration.

    `tensor_names` (the float tensors) and `num_layers` default to those of the base checkpoint (the
    first model without a base); filters and gradients are evaluated on them.
    """
    where = f"{where} (a mergekit configuration)"
    for key in data:
        if key in REFUSED_KEYS:
            raise MergekitImportError(f"{where}: key '{key}' is not supported: {REFUSED_KEYS[key]}")
        if key not in TOP_KEYS:
            raise MergekitImportError(f"{where}: unknown key '{key}' (evomerge reads {', '.join(TOP_KEYS)})")
    name = data["merge_method"]
    method = SHARED_METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        other = " (a mergekit method evomerge does not have)" if name in MERGEKIT_ONLY else ""
        raise MergekitImportError(f"{where}: merge_method '{name}'{other} is not supported; evomerge reads "
                                  f"{', '.join(sorted(SHARED_METHODS))}")
    base = _model_path(data.get("base_model"), f"{where}: base_model") if data.get("base_model") is not None else None
    entries = _model_entries(data.get("models"), where)
    top = _params(data.get("parameters"), method, f"{where}: parameters", per_model_ok=True)
    per_model = [(path, _params(params, method, f"{where}: models[{i}].parameters", per_model_ok=False))
                 for i, (path, params) in enumerate(entries)]
    recipe_base, models = _inputs(method, base, per_model, where)
    dtype = _dtype(data, where)
    seed = data.get("random_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MergekitImportError(f"{where}: random_seed must be an integer, got {seed!r}")
    source = data.get("tokenizer_source")
    if source not in (None, "base"):
        raise MergekitImportError(f"{where}: tokenizer_source {source!r} is not supported "
                                  "(evomerge copies the base's tokenizer, i.e. tokenizer_source: base)")

    reference = base or models[0][0]
    if tensor_names is None:
        from evomerge.checkpoint import Checkpoint

        tensor_names = [n for n, info in Checkpoint.open(reference).tensors.items() if info.is_float]
    layers: list[int | None] = [num_layers]

    def t_of(tensor: str) -> float:  # mergekit's gradient position; read the layer count only when needed
        idx = layer_index(tensor)
        if idx is None:
            return 0.0
        if layers[0] is None:
            from evomerge.genome import read_num_layers

            layers[0] = read_num_layers(reference)
        return idx / (layers[0] - 1) if layers[0] > 1 else 1.0

    values = {n: _tensor_params(n, method, top, models, t_of, where) for n in tensor_names}
    params, overrides = _as_overrides(values, tensor_names, _filters(data))
    recipe = MergeRecipe.from_dict({"base": recipe_base, "models": [m for m, _ in models], "method": method.evomerge,
                                    "parameters": params, "dtype": dtype, "seed": seed, "overrides": overrides},
                                   where=where)
    for n in tensor_names:  # the recipe must give every tensor mergekit's values
        want = recipe.rule_for(n).parameters
        got = {k: tuple(v) if isinstance(v, list) else v for k, v in values[n].items()}
        if any(want[k] != v for k, v in got.items()):
            raise MergekitImportError(f"{where}: internal error: the recipe does not reproduce tensor '{n}'")
    return recipe


def load_mergekit_file(path: str | Path) -> MergeRecipe:
    from evomerge.yamlio import read_yaml_file

    data = read_yaml_file(Path(path), RecipeError, "mergekit config")
    if not is_mergekit_config(data):
        raise RecipeError(f"{path}: not a mergekit configuration (no 'merge_method' key)")
    return recipe_from_mergekit(data, where=str(path))


def load_recipe_or_mergekit(path: str | Path) -> MergeRecipe:
    """What `evomerge merge` reads: a mergekit YAML, an evomerge recipe or a merge_recipe.yaml."""
    from evomerge.io.provenance import load_recipe_file
    from evomerge.yamlio import load_yaml

    try:
        data = load_yaml(Path(path).read_text())
    except Exception:  # noqa: BLE001 - unreadable: load_recipe_file reports it with the file name
        data = None
    return load_mergekit_file(path) if is_mergekit_config(data) else load_recipe_file(path)


# -- the parts of the file ---------------------------------------------------------------------------


def _model_path(ref: Any, where: str) -> str:
    if not isinstance(ref, str):
        raise MergekitImportError(f"{where}: expected a checkpoint directory path, got {ref!r}")
    path = Path(ref).expanduser()  # relative to the working directory, as mergekit reads it
    if is_hub_id(ref):  # a Hub id, as in mergekit (evomerge.io.hub: a local directory of that name wins)
        return ref
    if not path.is_dir():
        extra = " (a LoRA adapter '+...' is not supported)" if "+" in ref else ""
        raise MergekitImportError(f"{where}: '{ref}' is not a local checkpoint directory{extra} nor a Hugging Face "
                                  "Hub id org/name[@revision]")
    return str(path.absolute())


def _model_entries(models: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(models, list) or not models:
        raise MergekitImportError(f"{where}: 'models' must be a non-empty list of {{model: PATH, parameters: ...}}")
    out = []
    for i, entry in enumerate(models):
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise MergekitImportError(f"{where}: models[{i}] must be a mapping with a 'model' key, got {entry!r}")
        extra = sorted(set(entry) - {"model", "parameters"})
        if extra:
            raise MergekitImportError(f"{where}: models[{i}]: unknown key '{extra[0]}' (a model entry has "
                                      "'model' and 'parameters')")
        out.append((_model_path(entry["model"], f"{where}: models[{i}].model"), entry.get("parameters")))
    return out


def _params(params: Any, method: SharedMethod, where: str, per_model_ok: bool) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise MergekitImportError(f"{where}: expected a mapping of parameter settings, got {params!r}")
    out = {}
    for key, setting in params.items():
        if key in method.ignored:
            continue  # mergekit accepts it, and it cannot change this method's result
        p = method.param(key)
        if p is None:
            known = sorted([q.name for q in method.params] + list(method.ignored))
            raise MergekitImportError(f"{where}: mergekit's '{method.mergekit}' has no parameter '{key}' "
                                      f"(its parameters: {', '.join(known)})")
        if p.scope == "shared" and not per_model_ok:
            raise MergekitImportError(f"{where}: '{key}' is a shared parameter of '{method.mergekit}': mergekit "
                                      "reads it only from the top-level 'parameters' (it would ignore it here)")
        out[key] = setting
    return out


def _inputs(method: SharedMethod, base: str | None, per_model: list[tuple[str, dict]], where: str):
    """(the recipe's base, [(model, its settings)]) in evomerge's convention for the method."""
    if method.base == "none":
        if base is not None:
            raise MergekitImportError(f"{where}: key 'base_model' with linear: mergekit adds the base model to "
                                      "linear's inputs; list it under 'models' with a weight instead")
        return None, per_model
    if base is None:
        raise MergekitImportError(f"{where}: mergekit's '{method.mergekit}' needs a 'base_model'")
    others = [(m, p) for m, p in per_model if m != base]  # mergekit reads no per-model parameter of the base
    if method.base == "endpoint":  # slerp: from the base (t = 0) to the other model (t = 1)
        if len(others) != 1:
            raise MergekitImportError(f"{where}: slerp needs exactly one model besides base_model, got {len(others)}")
        return None, [(base, {}), others[0]]
    if not others:
        raise MergekitImportError(f"{where}: 'models' lists no model besides base_model")
    return base, others


def _dtype(data: Mapping[str, Any], where: str) -> str | None:
    for key in ("dtype", "out_dtype"):
        if data.get(key) is not None and data[key] not in DTYPES:
            raise MergekitImportError(f"{where}: {key} {data[key]!r} is not supported (use one of {', '.join(DTYPES)})")
    # mergekit writes out_dtype, else the dtype it computed in; evomerge always computes in float32
    return data.get("out_dtype") or data.get("dtype")


def _filters(data: Mapping[str, Any]) -> list[str]:
    """Every filter string in the file: candidates for readable overrides."""
    found: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, Mapping):
            if isinstance(x.get("filter"), str) and x["filter"] not in found:
                found.append(x["filter"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk({k: data.get(k) for k in ("parameters", "models")})
    return found


# -- mergekit's parameter resolution (mergekit/config.py evaluate_setting, parameter_resolver.py) ---------


def _tensor_params(tensor: str, method: SharedMethod, top: Mapping[str, Any], models: list[tuple[str, dict]],
                   t_of: Callable[[str], float], where: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(method.fixed)
    for p in method.params:
        if p.scope == "shared":
            out[p.name] = _resolve(p, [(top, "parameters")], tensor, t_of, where, None)
        else:
            out[p.name] = [_resolve(p, [(params, f"models[{i}].parameters"), (top, "parameters")], tensor, t_of,
                                    where, model) for i, (model, params) in enumerate(models)]
    return out


def _resolve(p: MkParam, sources: list[tuple[Mapping[str, Any], str]], tensor: str, t_of: Callable[[str], float],
             where: str, model: str | None) -> Any:
    for settings, name in sources:
        if p.name in settings:
            value = _evaluate(settings[p.name], p, tensor, t_of, f"{where}: {name}.{p.name}")
            if value is not None:
                return value
    if p.default is REQUIRED:
        who = f" of model '{model}'" if model else ""
        raise MergekitImportError(f"{where}: parameter '{p.name}'{who} has no value for tensor '{tensor}' "
                                  "(mergekit requires one: set it for every tensor)")
    return p.default


def _evaluate(setting: Any, p: MkParam, tensor: str, t_of: Callable[[str], float], where: str) -> Any:
    if isinstance(setting, Mapping):
        setting = [setting]
    if not isinstance(setting, list):
        return _validate(setting, p, where)
    if not setting:
        return None
    if all(not isinstance(e, (Mapping, list)) for e in setting):  # a gradient over the layers
        values = [_validate(e, p, where) for e in setting]
        t = t_of(tensor)
        if p.kind is bool:
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return float((1 - frac) * values[i0] + frac * values[i1])
    for i, cond in enumerate(setting):
        if not isinstance(cond, Mapping) or "value" not in cond or set(cond) - {"filter", "value"}:
            raise MergekitImportError(f"{where}[{i}]: a conditional is {{filter: SUBSTRING, value: V}} "
                                      f"(filter optional), got {cond!r}")
        f = cond.get("filter")
        if f is not None and not isinstance(f, str):
            raise MergekitImportError(f"{where}[{i}].filter: expected a string, got {f!r}")
        if f is None or f == "*" or (tensor and f in tensor):
            if isinstance(cond["value"], (Mapping,)) or (isinstance(cond["value"], list)
                                                         and any(isinstance(e, (Mapping, list)) for e in cond["value"])):
                raise MergekitImportError(f"{where}[{i}].value: expected a value or a gradient, got {cond['value']!r}")
            return _evaluate(cond["value"], p, tensor, t_of, f"{where}[{i}].value")
    return None


def _validate(value: Any, p: MkParam, where: str) -> Any:
    if p.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise MergekitImportError(f"{where}: expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise MergekitImportError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)  # mergekit reads YAML 1.1 strings such as '1e-5' as numbers
    except (TypeError, ValueError):
        raise MergekitImportError(f"{where}: expected a number, got {value!r}") from None


# -- per-tensor values -> a recipe ---------------------------------------------------------------------


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def _as_overrides(values: Mapping[str, dict[str, Any]], names: Sequence[str],
                  filters: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The most common parameter set becomes the recipe's; every other set gets overrides that match
    exactly its tensors: a filter of the file when it selects exactly them, else whole layers, else
    tensor-name patterns (the layer index as \\d+) per set of layers, else exact names."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(_key(values[n]), []).append(n)
    top_key = Counter({k: len(v) for k, v in groups.items()}).most_common(1)[0][0]
    by_layer: dict[int, set[str]] = {}
    for n in names:
        idx = layer_index(n)
        if idx is not None:
            by_layer.setdefault(idx, set()).add(n)
    overrides = []
    for key, members in groups.items():
        if key == top_key:
            continue
        params = values[members[0]]
        overrides += [{**sel, "parameters": params} for sel in _selectors(set(members), names, by_layer, filters)]
    return values[groups[top_key][0]], overrides


def _selectors(members: set[str], names: Sequence[str], by_layer: Mapping[int, set[str]],
               filters: Sequence[str]) -> list[dict[str, Any]]:
    for f in filters:
        if f != "*" and {n for n in names if f in n} == members:
            return [{"modules": [_literal(f)]}]
    out: list[dict[str, Any]] = []
    full = sorted(i for i, layer in by_layer.items() if layer <= members)
    if full:
        out.append({"layers": full})
    rest = members - {n for i in full for n in by_layer[i]}
    patterns: dict[str, set[int]] = {}
    loose = []
    for n in sorted(rest):
        m = _LAYER_INDEX.search(n)
        if m is None:
            loose.append(n)
            continue
        pattern = "^" + re.escape(n[:m.start(1)]) + r"\d+" + re.escape(n[m.end(1):]) + "$"
        patterns.setdefault(pattern, set()).add(int(m.group(1)))
    by_layers: dict[tuple[int, ...], list[str]] = {}
    for pattern, idx in patterns.items():
        by_layers.setdefault(tuple(sorted(idx)), []).append(pattern)
    for idx, pats in by_layers.items():
        chosen = {n for n in rest if layer_index(n) in idx and any(re.search(p, n) for p in pats)}
        in_layers = [n for i in idx for n in by_layer[i]]
        f = next((f for f in filters if f != "*" and {n for n in in_layers if f in n} == chosen), None)
        out.append({"layers": list(idx), "modules": [_literal(f)] if f is not None else pats})
    if loose:
        out.append({"modules": ["^" + re.escape(n) + "$" for n in loose]})
    return out


def _literal(substring: str) -> str:
    """A regex searching for the substring; never a bare module-type name (`mlp` would mean the module type)."""
    pattern = re.escape(substring)
    return f"(?:{pattern})" if pattern in MODULE_TYPES else pattern
