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
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from evomerge.errors import RecipeError, SearchSpaceError
from evomerge.recipe import MergeRecipe, Override
from evomerge.search.codec import Gene, Group, layer_blocks, plain, write_option_scores
from evomerge.search.space_spec import (ParamGene, SearchSpaceSpec, check_param, refuse_weight_divided_out,
                                        resolve_bounds)


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
                    fixed[pname] = check_param(pspec, gene.value, f"{where}.{pname}")
                    continue
                searched.append((pname, resolve_bounds(pspec, gene, f"{where}.{pname}")))
            try:
                mspec.resolve(fixed, len(self.models), where)  # model count and fixed values fit the method
            except RecipeError as exc:
                raise SearchSpaceError(str(exc)) from None
            refuse_weight_divided_out(mspec, fixed, searched, where)
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
                params[pname] = [plain(self._by_name[k].snap(values[k])) for k in names]
            else:
                k = f"{group.name}.{method}.{pname}"
                params[pname] = plain(self._by_name[k].snap(values[k]))
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
