"""MergeRecipe: the one contract shared by `evomerge merge`, the search and the tests.

A recipe names a base, the models to merge, a default method with its parameters, and an
ordered list of overrides that choose another method (or other parameters) for some decoder
layers and/or module types. The first matching override wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from evomerge.io.safetensors_format import OUTPUT_DTYPES, OutputDType  # noqa: F401 (re-exported)
from evomerge.io.yaml_files import read_yaml_file
from evomerge.errors import RecipeError, validation_problems

DType = OutputDType  # the name this module has always used

# Module types a user can name in an override, tested in this order (a Qwen3 `self_attn.q_norm`
# is a norm, not an attention projection).
MODULE_TYPES: dict[str, re.Pattern[str]] = {
    "lm_head": re.compile(r"(^|\.)lm_head\."),
    "embed": re.compile(r"(^|\.)(embed_tokens|wte|wpe|embeddings?)\."),
    "norm": re.compile(r"norm|(^|\.)ln_[^.]*\."),
    "attn": re.compile(r"(^|\.)(self_attn|attention|attn)\."),
    "mlp": re.compile(r"(^|\.)(mlp|feed_forward|ffn)\."),
}
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    """Decoder layer index of a tensor (`model.layers.7.mlp.up_proj.weight` -> 7), None outside layers."""
    m = _LAYER_INDEX.search(tensor_name)
    return int(m.group(1)) if m else None


def module_type(tensor_name: str) -> str:
    """One of MODULE_TYPES' keys, or 'other'."""
    for kind, pattern in MODULE_TYPES.items():
        if pattern.search(tensor_name):
            return kind
    return "other"


def parse_layers(spec: str | int | list[int] | None) -> frozenset[int] | None:
    """'0-5', '0-3,7', 4, [1, 2] -> a set of indices; None means every tensor (layers or not)."""
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise RecipeError(f"layers: expected a range like '0-5', a list or an int, got {spec!r}")
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise RecipeError(f"layers: cannot read {part!r} in {spec!r}; use '0-5', '0-3,7' or a list")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise RecipeError(f"layers: range {part!r} is empty (end before start)")
            out.update(range(lo, hi + 1))
        return frozenset(out)
    if isinstance(spec, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in spec):
        return frozenset(spec)
    raise RecipeError(f"layers: expected a range like '0-5', a list of non-negative ints or an int, got {spec!r}")


class Override(BaseModel):
    """A rule for some tensors: layers (None = all) x modules (None = all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: str | int | list[int] | None = None
    modules: list[str] | None = None
    method: str | None = None  # None: the recipe's method, with these parameters layered on top
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v):
        parse_layers(v)
        return v

    @field_validator("modules")
    @classmethod
    def _check_modules(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("modules: give at least one module type or regex, or omit the key")
        for m in v:
            if m not in MODULE_TYPES:
                try:
                    re.compile(m)
                except re.error as exc:
                    raise ValueError(
                        f"modules: {m!r} is neither a module type {sorted(MODULE_TYPES)} nor a valid regex ({exc})"
                    ) from None
        return v

    def matches(self, tensor_name: str) -> bool:
        layers = parse_layers(self.layers)
        if layers is not None and layer_index(tensor_name) not in layers:
            return False
        if self.modules is None:
            return True
        kind = module_type(tensor_name)
        return any(m == kind if m in MODULE_TYPES else re.search(m, tensor_name) for m in self.modules)


@dataclass(frozen=True)
class MergeRule:
    """The method and fully resolved parameters that apply to one tensor."""

    method: str
    parameters: Mapping[str, Any]  # validated, defaults filled, per-model values as tuples
    source: str  # 'recipe' or 'overrides[i]' — for error messages and provenance


class MergeRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str | None = None
    models: list[str] = Field(min_length=1)
    method: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: DType | None = None  # output dtype; None: the base's (or the first model's)
    seed: int = 0
    overrides: list[Override] = Field(default_factory=list)

    _rules: dict[str, MergeRule] = PrivateAttr(default_factory=dict)  # tensor name -> rule

    @model_validator(mode="after")
    def _check_methods(self):
        # imported here: the registry imports method modules, which import torch
        from evomerge.methods.registry import get_method

        n = len(self.models)
        top = get_method(self.method)
        if top.requires_base and self.base is None:
            raise RecipeError(f"recipe: method '{self.method}' needs a base model ('base:' is missing)")
        top.resolve(self.parameters, n, "recipe")
        for i, ov in enumerate(self.overrides):
            where = f"overrides[{i}]"
            spec = get_method(ov.method or self.method)
            if spec.requires_base and self.base is None:
                raise RecipeError(f"{where}: method '{spec.name}' needs a base model ('base:' is missing)")
            spec.resolve(self._override_params(ov), n, where)
        return self

    def _override_params(self, ov: Override) -> dict[str, Any]:
        if ov.method is None or ov.method == self.method:
            return {**self.parameters, **ov.parameters}
        return dict(ov.parameters)

    # -- queries -------------------------------------------------------------------------------

    def rule_for(self, tensor_name: str) -> MergeRule:
        rule = self._rules.get(tensor_name)
        if rule is None:
            rule = self._rules[tensor_name] = self._find_rule(tensor_name)
        return rule

    def _find_rule(self, tensor_name: str) -> MergeRule:
        from evomerge.methods.registry import get_method

        n = len(self.models)
        for i, ov in enumerate(self.overrides):
            if ov.matches(tensor_name):
                method = ov.method or self.method
                where = f"overrides[{i}]"
                return MergeRule(method, get_method(method).resolve(self._override_params(ov), n, where), where)
        return MergeRule(self.method, get_method(self.method).resolve(self.parameters, n, "recipe"), "recipe")

    def methods_used(self) -> set[str]:
        return {self.method} | {ov.method for ov in self.overrides if ov.method}

    # -- YAML ----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "recipe") -> "MergeRecipe":
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: expected a mapping with base/models/method, got {type(data).__name__}")
        if "merge_method" in data:  # mergekit's required key: say so instead of listing unknown keys
            raise RecipeError(f"{where}: this is a mergekit configuration (it has 'merge_method'), not an evomerge "
                              "recipe; `evomerge merge` reads it, `evomerge recipe convert` converts it")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise RecipeError(f"{where}: {validation_problems(exc, 'recipe')}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MergeRecipe":
        """Load a recipe file. Relative model paths are resolved against the file's directory; a name that is
        no local directory there but reads as a Hub id (`org/name[@revision]`) stays one (evomerge.io.hub)."""
        path = Path(path)
        data = read_yaml_file(path, RecipeError, "recipe")
        if isinstance(data, Mapping):
            data = dict(data)
            here = path.resolve().parent
            if isinstance(data.get("base"), str):
                data["base"] = _resolve(here, data["base"])
            if isinstance(data.get("models"), list):
                data["models"] = [_resolve(here, m) if isinstance(m, str) else m for m in data["models"]]
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _resolve(here: Path, p: str) -> str:
    from evomerge.io.hub import locate

    return locate(p, here)
