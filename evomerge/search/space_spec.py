"""The search space YAML (search_spaces/*.yaml): its schema, the bundled spaces, and the checks of a
space's genes against each method's parameters (used when a space is bound to checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.bundled import bundled_dir
from evomerge.errors import RecipeError, SearchSpaceError, validation_problems
from evomerge.io.yaml_files import read_yaml_file


class ParamGene(BaseModel):
    """How one method parameter is treated: searched (low/high or choices), or fixed (value)."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    scale: Literal["linear", "log"] = "linear"
    choices: list[Any] | None = None
    value: Any = None
    per_model: bool = False  # one gene per model (e.g. TIES weights) instead of one shared value
    # decode to one of `grid` evenly spaced points of the (log) range: a recipe then repeats exactly, so
    # per-value work (RAM+'s whole-model overlap counts) and whole evaluations are reused from caches
    grid: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _one_kind(self):
        fixed = self.value is not None
        if fixed and (self.low is not None or self.high is not None or self.choices is not None):
            raise ValueError("give either 'value' (fixed) or bounds/choices (searched), not both")
        if self.choices is not None and (self.low is not None or self.high is not None):
            raise ValueError("give either 'choices' or 'low'/'high', not both")
        if self.choices is not None and len(self.choices) < 1:
            raise ValueError("'choices' needs at least one entry")
        if self.grid is not None and (fixed or self.choices is not None):
            raise ValueError("'grid' applies to numeric genes searched between low and high")
        return self


class LayerGroups(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1)  # contiguous blocks of decoder layers (capped at the number of layers)
    split_modules: bool = False  # attention and the rest of each block (MLP, norms) get separate genes
    # embeddings, final norm and lm_head: their own genes, or those of the first / last layer group
    non_layer: Literal["own", "first", "last"] = "own"


class SearchSpaceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    layer_groups: LayerGroups = Field(default_factory=LayerGroups)
    # method -> {parameter -> gene}; several methods make the method itself a categorical gene per group
    methods: dict[str, dict[str, ParamGene]] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _empty_methods(cls, data):
        # `ram: {}` or `ram:` (None) both mean "this method, every parameter at its default"
        if isinstance(data, dict) and isinstance(data.get("methods"), dict):
            data = dict(data)
            data["methods"] = {k: (v or {}) for k, v in data["methods"].items()}
        return data


def bundled_spaces_dir() -> Path:
    """The bundled search spaces: inside the installed package, or the checkout's search_spaces/."""
    return bundled_dir("search_spaces")


def list_bundled_spaces() -> list[str]:
    folder = bundled_spaces_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_space_spec(source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                    where: str = "search_space") -> SearchSpaceSpec:
    """A bundled space name (e.g. 'ram_per_layer'), a YAML path, or an inline mapping; `overrides`
    are merged on top key by key (e.g. {'layer_groups': {'count': 2}})."""
    if isinstance(source, Mapping):
        data, origin = dict(source), where
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = bundled_spaces_dir() / f"{source}.yaml"
            if not path.is_file():
                raise SearchSpaceError(
                    f"{where}: no bundled search space named {str(source)!r}; known: {', '.join(list_bundled_spaces())} "
                    "(or give a path to a YAML file)"
                )
        data = read_yaml_file(path, SearchSpaceError, "search space")
        if not isinstance(data, dict):
            raise SearchSpaceError(f"{path}: expected a mapping with name/layer_groups/methods")
        origin = str(path)
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return SearchSpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise SearchSpaceError(f"{origin}: {validation_problems(exc, 'space')}") from None


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def refuse_weight_divided_out(mspec, fixed: Mapping[str, Any], searched: Sequence[tuple[str, ParamGene]],
                               where: str) -> None:
    """One searched `weight` shared by all models is a dead gene when the method normalizes by the sum of the
    weights (linear, ties by default): sum(w * tau) / sum(w) does not depend on w, so the search would spend
    a dimension on nothing and report values that mean nothing."""
    names = {p.name for p in mspec.params}
    if not {"weight", "normalize"} <= names:
        return
    genes = dict(searched)
    weight = genes.get("weight")
    if weight is None or weight.per_model or "normalize" in genes:
        return
    if fixed.get("normalize", mspec.param("normalize").default) is True:
        raise SearchSpaceError(
            f"{where}.weight: one weight for all models is divided out by normalize=true (the merge would not "
            f"change); search 'lambda' to scale the merged task vector, make the weight 'per_model: true', or "
            f"fix 'normalize: {{value: false}}'")


def check_param(pspec, value, where: str):
    try:
        return pspec.check(value, where)
    except RecipeError as exc:
        raise SearchSpaceError(str(exc)) from None


def resolve_bounds(pspec, gene: ParamGene, where: str) -> ParamGene:
    """Fill missing bounds from the method's ParamSpec and check the searched range is valid."""
    if pspec.choices is not None or gene.choices is not None:
        choices = gene.choices if gene.choices is not None else list(pspec.choices or [])
        if not choices:
            raise SearchSpaceError(f"{where}: parameter is numeric; give low/high, not choices")
        for c in choices:
            check_param(pspec, c, where)
        return gene.model_copy(update={"choices": list(choices)})
    low = gene.low if gene.low is not None else pspec.low
    high = gene.high if gene.high is not None else pspec.high
    if low is None or high is None:
        raise SearchSpaceError(f"{where}: the method gives no bound here; write 'low' and 'high' in the space")
    if not low < high:
        raise SearchSpaceError(f"{where}: need low < high, got [{low}, {high}]")
    if gene.scale == "log" and low <= 0:
        raise SearchSpaceError(f"{where}: a log-scale gene needs low > 0, got {low}")
    for v, side in ((low, "low"), (high, "high")):
        try:
            pspec.check(v, where)
        except RecipeError as exc:
            raise SearchSpaceError(f"{exc} (the space's '{side}' bound; narrow it)") from None
    return gene.model_copy(update={"low": float(low), "high": float(high)})
