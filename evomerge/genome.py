"""SearchSpace: a declarative search space (search_spaces/*.yaml) bound to a set of checkpoints.

A space names, per layer group, which merge methods may be chosen and which of their parameters are
searched (bounds, linear or log scale), fixed or left at their defaults. Binding it to a base and its
models (number of layers, model names) gives a flat list of genes. A genome is a dict gene -> value;
`decode` turns it into a `MergeRecipe` (deterministic, always valid: every bound is checked against
the method's `ParamSpec` when the space is bound) and `encode` reads a recipe back into a genome.

For optimizers that need a vector (CMA-ES) `to_vector` / `from_vector` map a genome to [0, 1]^d:
one coordinate per float gene (log genes in log space) and one score per choice of a categorical gene,
decoded by argmax.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.bundled import bundled_dir
from evomerge.yamlio import read_yaml_file
from evomerge.errors import RecipeError, SearchSpaceError, validation_problems
from evomerge.recipe import MergeRecipe, Override

# ---------------------------------------------------------------------------------------------
# The YAML schema
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Bound space: groups and genes
# ---------------------------------------------------------------------------------------------


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


class SearchSpace:
    """A SearchSpaceSpec bound to a base and models: concrete groups and genes."""

    def __init__(self, spec: SearchSpaceSpec, *, base: str | None, models: Sequence[str],
                 model_names: Sequence[str] | None = None, num_layers: int, seed: int = 0,
                 dtype: str | None = None):
        from evomerge.methods.registry import get_method

        if num_layers < 1:
            raise SearchSpaceError(f"space '{spec.name}': the checkpoints report {num_layers} decoder layers")
        self.spec = spec
        self.base = base
        self.models = list(models)
        self.model_names = list(model_names) if model_names is not None else [Path(m).name for m in self.models]
        if len(self.model_names) != len(self.models):
            raise SearchSpaceError(f"space '{spec.name}': {len(self.model_names)} model names for {len(self.models)} models")
        self.num_layers = num_layers
        self.seed = seed
        self.dtype = dtype
        self.method_names = list(spec.methods)

        lg = spec.layer_groups
        groups: list[Group] = []
        for i, (lo, hi) in enumerate(layer_blocks(num_layers, lg.count)):
            if lg.split_modules:
                groups += [Group(f"g{i}.attn", (lo, hi), "attn"), Group(f"g{i}.mlp", (lo, hi), "rest")]
            else:
                groups.append(Group(f"g{i}", (lo, hi)))
        self.layer_groups = groups
        self.other_group = Group("other", None) if lg.non_layer == "own" else None
        self.groups = groups + ([self.other_group] if self.other_group else [])

        # validate each method's genes once against its ParamSpec; collect fixed values
        self._fixed: dict[str, dict[str, Any]] = {}
        self._method_genes: dict[str, list[tuple[str, ParamGene]]] = {}
        for method, params in spec.methods.items():
            try:
                mspec = get_method(method)
            except RecipeError as exc:
                raise SearchSpaceError(f"space '{spec.name}': {exc}") from None
            if mspec.requires_base and base is None:
                raise SearchSpaceError(f"space '{spec.name}': method '{method}' needs a base model; the experiment gives none")
            where = f"space '{spec.name}', methods.{method}"
            fixed: dict[str, Any] = {}
            searched: list[tuple[str, ParamGene]] = []
            for pname, gene in params.items():
                try:
                    pspec = mspec.param(pname)
                except KeyError:
                    known = sorted(p.name for p in mspec.params) or "none"
                    raise SearchSpaceError(f"{where}: method has no parameter '{pname}'; its parameters are {known}") from None
                if gene.per_model and not pspec.per_model:
                    raise SearchSpaceError(f"{where}.{pname}: 'per_model: true' but '{method}' takes one value for all models")
                if gene.value is not None:
                    fixed[pname] = _check_param(pspec, gene.value, f"{where}.{pname}")
                    continue
                searched.append((pname, _resolve_bounds(pspec, gene, f"{where}.{pname}")))
            try:
                mspec.resolve(fixed, len(self.models), where)  # model count and fixed values fit the method
            except RecipeError as exc:
                raise SearchSpaceError(str(exc)) from None
            _refuse_weight_divided_out(mspec, fixed, searched, where)
            self._fixed[method] = fixed
            self._method_genes[method] = searched

        genes: list[Gene] = []
        for group in self.groups:
            if len(self.method_names) > 1:
                genes.append(Gene(f"{group.name}.method", group.name, None, None, choices=tuple(self.method_names)))
            for method in self.method_names:
                for pname, g in self._method_genes[method]:
                    owners = range(len(self.models)) if g.per_model else [None]
                    for m in owners:
                        suffix = f"[{self.model_names[m]}]" if m is not None else ""
                        name = f"{group.name}.{method}.{pname}{suffix}"
                        if g.choices is not None:
                            genes.append(Gene(name, group.name, method, pname, m, choices=tuple(g.choices)))
                        else:
                            genes.append(Gene(name, group.name, method, pname, m, g.low, g.high, g.scale == "log",
                                              grid=g.grid))
        self.genes = genes
        self._by_name = {g.name: g for g in genes}
        # vector layout for CMA-ES: (gene, first coordinate, number of coordinates)
        layout, offset = [], 0
        for g in genes:
            width = len(g.choices) if g.categorical else 1
            layout.append((g, offset, width))
            offset += width
        self._layout = layout
        self.dimension = offset

    # -- construction from checkpoints ------------------------------------------------------------

    @classmethod
    def for_checkpoints(cls, spec: SearchSpaceSpec, base: str | None, models: Mapping[str, str] | Sequence[str],
                        seed: int = 0, dtype: str | None = None) -> "SearchSpace":
        """Bind a spec to checkpoints, reading the layer count from the base's (or first model's) config.json."""
        names = list(models) if isinstance(models, Mapping) else None
        paths = list(models.values()) if isinstance(models, Mapping) else list(models)
        return cls(spec, base=base, models=paths, model_names=names, num_layers=read_num_layers(base or paths[0]),
                   seed=seed, dtype=dtype)

    # -- genome <-> recipe ------------------------------------------------------------------------

    def gene(self, name: str) -> Gene:
        return self._by_name[name]

    def check(self, values: Mapping[str, Any]) -> None:
        missing = [g.name for g in self.genes if g.name not in values]
        if missing:
            raise SearchSpaceError(f"space '{self.spec.name}': genome lacks gene(s) {missing[:5]}")
        unknown = sorted(set(values) - set(self._by_name))
        if unknown:
            raise SearchSpaceError(f"space '{self.spec.name}': genome has unknown gene(s) {unknown[:5]}")
        for g in self.genes:
            g.check(values[g.name])

    def method_of(self, group: Group, values: Mapping[str, Any]) -> str:
        return values[f"{group.name}.method"] if len(self.method_names) > 1 else self.method_names[0]

    def group_rule(self, group: Group, values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The method and parameters a genome gives one group's tensors."""
        method = self.method_of(group, values)
        params: dict[str, Any] = dict(self._fixed[method])
        for pname, g in self._method_genes[method]:
            if g.per_model:
                names = [f"{group.name}.{method}.{pname}[{n}]" for n in self.model_names]
                params[pname] = [_plain(self._by_name[k].snap(values[k])) for k in names]
            else:
                k = f"{group.name}.{method}.{pname}"
                params[pname] = _plain(self._by_name[k].snap(values[k]))
        return method, params

    def decode(self, values: Mapping[str, Any]) -> MergeRecipe:
        """Genome -> recipe. Pure and deterministic; the recipe is valid for every in-bounds genome."""
        self.check(values)
        if self.other_group is not None:
            top = self.other_group
        else:
            top = self.layer_groups[0] if self.spec.layer_groups.non_layer == "first" else self.layer_groups[-1]
        top_method, top_params = self.group_rule(top, values)
        overrides = []
        for group in self.layer_groups:
            method, params = self.group_rule(group, values)
            lo, hi = group.layers
            layers = f"{lo}-{hi}" if hi > lo else str(lo)
            modules = ["attn"] if group.part == "attn" else None
            overrides.append(Override(layers=layers, modules=modules, method=method, parameters=params))
        try:
            return MergeRecipe(base=self.base, models=self.models, method=top_method, parameters=top_params,
                               dtype=self.dtype, seed=self.seed, overrides=overrides)
        except (RecipeError, ValidationError) as exc:  # a bug, not a user error: bounds were checked at bind time
            raise SearchSpaceError(f"space '{self.spec.name}': genome decoded to an invalid recipe ({exc})") from exc

    def encode(self, recipe: MergeRecipe) -> dict[str, Any]:
        """Recipe -> genome: reads the rule that applies to one tensor of each group. Genes of methods a
        group does not use are set to their midpoint, so `decode(encode(r))` merges exactly like `r`
        (except that values of grid genes are snapped to their grid)."""
        if len(recipe.models) != len(self.models):
            raise SearchSpaceError(f"space '{self.spec.name}': recipe has {len(recipe.models)} models, the space {len(self.models)}")
        values: dict[str, Any] = {g.name: g.midpoint() for g in self.genes}
        for group in self.groups:
            rule = recipe.rule_for(group.probe_tensor())
            if rule.method not in self.method_names:
                raise SearchSpaceError(
                    f"space '{self.spec.name}': the recipe merges {group.describe()} with '{rule.method}', "
                    f"which the space does not search ({self.method_names})"
                )
            if len(self.method_names) > 1:
                values[f"{group.name}.method"] = rule.method
            for pname, g in self._method_genes[rule.method]:
                value = rule.parameters[pname]
                if g.per_model:
                    for m, n in enumerate(self.model_names):
                        values[f"{group.name}.{rule.method}.{pname}[{n}]"] = value[m]
                else:
                    if isinstance(value, tuple):
                        if len(set(value)) > 1:
                            raise SearchSpaceError(
                                f"space '{self.spec.name}': {group.describe()} uses different '{pname}' per model "
                                f"{list(value)}, but the space searches one shared value"
                            )
                        value = value[0]
                    values[f"{group.name}.{rule.method}.{pname}"] = value
        self.check(values)
        return values

    def active_genes(self, values: Mapping[str, Any]) -> list[str]:
        """Genes the decoded recipe actually uses (method genes + parameters of each group's chosen method)."""
        out = []
        for g in self.genes:
            if g.method is None or g.method == self.method_of(self._group(g.group), values):
                out.append(g.name)
        return out

    def _group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    # -- vectors (CMA-ES) and sampling -------------------------------------------------------------

    def to_vector(self, values: Mapping[str, Any]) -> np.ndarray:
        """Genome -> [0, 1]^dimension. Categorical genes: 0.75 for the chosen option, 0.25 for the others
        (inside the box, so an optimiser started there can move either way)."""
        x = np.zeros(self.dimension)
        for g, off, width in self._layout:
            if g.categorical:
                write_option_scores(x, off, width, g.choices.index(values[g.name]))
            else:
                x[off] = g.to_unit(values[g.name])
        return x

    def from_vector(self, x: Sequence[float]) -> dict[str, Any]:
        """[0, 1]^dimension -> genome (clipped; categorical genes take the highest score, ties -> first)."""
        x = np.asarray(x, float)
        if x.shape != (self.dimension,):
            raise SearchSpaceError(f"space '{self.spec.name}': vector has shape {x.shape}, expected ({self.dimension},)")
        values: dict[str, Any] = {}
        for g, off, width in self._layout:
            if g.categorical:
                values[g.name] = g.choices[int(np.argmax(x[off:off + width]))]
            else:
                values[g.name] = g.from_unit(x[off])
        return values

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random genome (log genes uniform in log space)."""
        return {g.name: (g.choices[int(rng.integers(len(g.choices)))] if g.categorical else g.from_unit(rng.random()))
                for g in self.genes}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "groups": {g.name: g.describe() for g in self.groups},
            "genes": [{"name": g.name, "low": g.low, "high": g.high, "log": g.log, "choices": g.choices}
                      if not g.categorical else {"name": g.name, "choices": list(g.choices)} for g in self.genes],
        }


def write_option_scores(x: np.ndarray, offset: int, width: int, index: int) -> None:
    """A categorical gene's coordinates in a genome vector: 0.75 for the chosen option, 0.25 for the others."""
    x[offset:offset + width] = 0.25
    x[offset + index] = 0.75


def read_num_layers(checkpoint_dir: str | Path) -> int:
    config_file = Path(checkpoint_dir) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise SearchSpaceError(f"{config_file}: cannot read the number of layers ({exc})") from None
    cfg = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    raise SearchSpaceError(f"{config_file}: no num_hidden_layers / n_layer / num_layers entry")


def _refuse_weight_divided_out(mspec, fixed: Mapping[str, Any], searched: Sequence[tuple[str, ParamGene]],
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


def _check_param(pspec, value, where: str):
    try:
        return pspec.check(value, where)
    except RecipeError as exc:
        raise SearchSpaceError(str(exc)) from None


def _resolve_bounds(pspec, gene: ParamGene, where: str) -> ParamGene:
    """Fill missing bounds from the method's ParamSpec and check the searched range is valid."""
    if pspec.choices is not None or gene.choices is not None:
        choices = gene.choices if gene.choices is not None else list(pspec.choices or [])
        if not choices:
            raise SearchSpaceError(f"{where}: parameter is numeric; give low/high, not choices")
        for c in choices:
            _check_param(pspec, c, where)
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


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars, so recipes serialise to YAML/JSON cleanly."""
    return v.item() if isinstance(v, np.generic) else v
