"""The sweep experiment YAML: a grid over merge methods and their parameters, on one model set.

```yaml
name: table1_three_agents
model_set: toy                  # the default set; `evomerge sweep ... --model-set paper` picks another
model_sets: model_sets.yaml     # a file (relative to this one) or an inline mapping: set name -> model set
sweep:
  methods:                      # row label -> merge method, fixed parameters and a grid (cartesian product)
    TA: {method: task_arithmetic, grid: {lambda: [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]}}
    RAM+: {method: ram_plus, parameters: {epsilon: 1.0e-5, r: 0.1, alpha: 2.0}}
    RAM+ r: {method: ram_plus, grid: {r: [0, 0.1]}, report: every}   # a row per grid point, not the best
  blocks:                       # optional: groups of models merged on their own (default: every model)
    code_tool: {models: [coding, tool_use], title: Code + Tool}
heldout: {split: test}          # the split the table reports
seed: 0
```

A model set is what changes between a CPU toy run and the paper's GPU run: `base`, `models`, the
`objectives` (suites, as in a search experiment; their `split` is where grid points are chosen),
`generator`, `workers`, `dtype`, plus `labels` (row names), `domains` (model -> the objectives that
measure it; a block shows the objectives of its models; default: the objective named like the model)
and `hint` (added to the error when a checkpoint is missing). Its paths may name environment variables
(`${EVOMERGE_PAPER_BASE}`); paths given on the command line (`--paths base=...`) win over both.
Relative paths are resolved against the file that holds them; command-line and environment paths
against the current directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, ValidationError, model_validator

from evomerge.errors import ExperimentError, validation_problems
from evomerge.scoring.settings import Cache, Heldout, ScoredModels, Strict, resolve_paths
from evomerge.yamlio import read_yaml_file

_ENV_VAR = re.compile(r"\$\{(\w+)\}")


class SweepMethod(Strict):
    """One row of the table: a merge method, its fixed parameters and the grid over the others."""

    method: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # parameter -> values, crossed with each other
    report: Literal["best", "every"] = "best"  # every: one table row per grid point (an ablation, as Table 2)

    @model_validator(mode="after")
    def _parameters_exist(self):
        from evomerge.errors import RecipeError
        from evomerge.methods.registry import get_method

        try:
            spec = get_method(self.method)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        known = {p.name for p in spec.params}
        unknown = sorted((set(self.parameters) | set(self.grid)) - known)
        if unknown:
            raise ValueError(f"method '{self.method}' has no parameter(s) {unknown}; its parameters are {sorted(known)}")
        both = sorted(set(self.parameters) & set(self.grid))
        if both:
            raise ValueError(f"{both} given both as fixed parameters and in the grid; keep one")
        empty = sorted(k for k, v in self.grid.items() if not v)
        if empty:
            raise ValueError(f"grid values of {empty} are empty; give at least one value or drop the key")
        return self


class SweepBlock(Strict):
    """Models merged together; the table gets a block of rows per block."""

    models: list[str] = Field(min_length=1)
    title: str | None = None


class Sweep(Strict):
    methods: dict[str, SweepMethod] = Field(min_length=1)
    blocks: dict[str, SweepBlock] | None = None  # None: one block with every model


class ModelSet(ScoredModels):
    """What changes between a CPU toy run and the paper's GPU run: `ScoredModels` (base, models, dtype,
    objectives, generator, workers) and the table's labels and domains."""

    description: str = ""
    hint: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)  # base / model name -> table row name
    domains: dict[str, list[str]] | None = None  # model -> objectives that measure it


class SweepExperiment(ModelSet):
    """A validated sweep on one model set (the model set's fields are flattened into it)."""

    name: str = "sweep"
    model_set: str = "default"
    sweep: Sweep
    heldout: Heldout = Field(default_factory=Heldout)
    cache: Cache = Field(default_factory=Cache)
    seed: int = 0

    yaml_order: ClassVar[tuple[str, ...]] = (
        "description", "hint", "base", "models", "labels", "objectives", "domains", "generator", "workers", "dtype",
        "name", "model_set", "sweep", "heldout", "cache", "seed")

    @model_validator(mode="after")
    def _consistent(self):
        names = set(self.models)
        if "base" in names:
            raise ValueError("a model is named 'base', which clashes with the base model's row; rename it")
        if not self.heldout.enabled:
            raise ValueError("the sweep reports the held-out split; heldout.enabled: false is not supported")
        self.check_heldout_split(self.heldout, "chooses grid points on", "the held-out split the table reports")
        stray = sorted(set(self.labels) - names - {"base"})
        if stray:
            raise ValueError(f"labels name unknown models {stray}; models are {sorted(names)}")
        for model, objectives in (self.domains or {}).items():
            if model not in names:
                raise ValueError(f"domains: '{model}' is not a model (models: {sorted(names)})")
            missing = sorted(set(objectives) - set(self.objectives))
            if missing:
                raise ValueError(f"domains.{model}: {missing} are not objectives (objectives: {list(self.objectives)})")
        for block_name, block in self.blocks().items():
            unknown = sorted(set(block.models) - names)
            if unknown:
                raise ValueError(f"sweep.blocks.{block_name}: unknown models {unknown} (models: {sorted(names)})")
            if not self.columns(block_name):
                raise ValueError(f"sweep.blocks.{block_name}: no objective measures its models; see `domains`")
        return self

    # -- derived ---------------------------------------------------------------------------------
    def blocks(self) -> dict[str, SweepBlock]:
        if self.sweep.blocks:
            return dict(self.sweep.blocks)
        return {"all": SweepBlock(models=list(self.models))}

    def domain_of(self, objective: str) -> str | None:
        """The model an objective measures, or None (it then belongs to every block)."""
        if self.domains is not None:
            return next((m for m, objs in self.domains.items() if objective in objs), None)
        return objective if objective in self.models else None

    def columns(self, block: str) -> list[str]:
        """The block's objectives: those measuring its models, and those measuring no model in particular."""
        models = set(self.blocks()[block].models)
        return [o for o in self.objectives if self.domain_of(o) is None or self.domain_of(o) in models]

    def label(self, name: str) -> str:
        return self.labels.get(name, name)

    def references(self) -> dict[str, str]:
        """Row name -> checkpoint: the base (if any) and every model, each scored as it is."""
        return ({"base": self.base} if self.base else {}) | dict(self.models)

    def with_overrides(self, *, limit: int | None = None, workers: int | None = None, worker_kind: str | None = None,
                       seed: int | None = None, cache: bool | None = None) -> "SweepExperiment":
        """The command line's settings on top: `limit` items per objective on both splits (a reduced run)."""
        data = self.to_dict()
        if limit is not None:
            if limit < 1:
                raise ExperimentError("--limit must be at least 1")
            for obj in data["objectives"].values():
                obj["suite"]["limit"] = limit
            data["heldout"]["limit"] = limit
        if workers is not None:
            data["workers"]["count"] = workers
        if worker_kind is not None:
            data["workers"]["kind"] = worker_kind
        if seed is not None:
            data["seed"] = seed
        if cache is not None:
            data["cache"]["enabled"] = cache
        return _validate(data, "command line")


# -------------------------------------------------------------------------------------------------
# loading: choose the model set, fill in the paths, validate
# -------------------------------------------------------------------------------------------------


def load_sweep_experiment(path: str | Path, model_set: str | None = None,
                          paths: Mapping[str, str] | None = None) -> SweepExperiment:
    """Read a sweep YAML on `model_set` (default: the file's `model_set`); `paths` (base / model name -> checkpoint
    directory, relative to the current directory) replace the model set's."""
    path = Path(path)
    data = _read_mapping(path, "sweep experiment")
    return sweep_experiment_from_dict(data, where=str(path), root=path.resolve().parent, model_set=model_set,
                                      paths=paths)


def sweep_experiment_from_dict(data: Mapping[str, Any], where: str = "sweep experiment", root: Path | None = None,
                               model_set: str | None = None, paths: Mapping[str, str] | None = None) -> SweepExperiment:
    data = dict(data)
    root = root or Path.cwd()
    sets = data.pop("model_sets", None)
    chosen = model_set or data.pop("model_set", None)
    data.pop("model_set", None)
    data = resolve_paths(data, root)
    if sets is not None:
        sets, sets_root, sets_where = _model_sets(sets, root, where)
        if chosen is None:
            if len(sets) != 1:
                raise ExperimentError(f"{where}: choose a model set with `model_set:` or --model-set "
                                      f"({', '.join(sets)})")
            chosen = next(iter(sets))
        if chosen not in sets:
            raise ExperimentError(f"{where}: no model set '{chosen}' in {sets_where}; model sets: {', '.join(sets)}")
        chosen_set = sets[chosen]
        if not isinstance(chosen_set, Mapping):
            raise ExperimentError(f"{sets_where}: model set '{chosen}' must be a mapping (base, models, objectives, ...)")
        data.update(resolve_paths(_expand_env(dict(chosen_set), chosen, paths or {}, sets_where), sets_root))
    elif chosen is not None and model_set is not None:
        raise ExperimentError(f"{where}: --model-set {chosen} given, but the file has no `model_sets:`")
    data["model_set"] = chosen or "default"
    data = _normalize_paths(_apply_paths(data, paths or {}, where))
    return _validate(data, where)


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    data = read_yaml_file(path, ExperimentError, what)
    if not isinstance(data, Mapping):
        raise ExperimentError(f"{path}: expected a mapping at the top level")
    return dict(data)


def _model_sets(sets: Any, root: Path, where: str) -> tuple[dict[str, Any], Path, str]:
    """(model sets, the folder their relative paths start from, where they were read)."""
    if isinstance(sets, str):
        file = Path(sets).expanduser()
        file = file if file.is_absolute() else root / file
        data = _read_mapping(file, "model sets")
        return data, file.resolve().parent, str(file)
    if isinstance(sets, Mapping) and sets:
        return dict(sets), root, f"{where} (model_sets)"
    raise ExperimentError(f"{where}: model_sets must be a file name or a non-empty mapping of set name -> model set")


def _expand_env(model_set: dict[str, Any], name: str, paths: Mapping[str, str], where: str) -> dict[str, Any]:
    """`${VAR}` in the base and model paths -> the variable's value (resolved against the current directory).
    A path given on the command line needs no variable."""

    def expand(key: str, value: Any) -> Any:
        if not isinstance(value, str) or not _ENV_VAR.search(value) or key in paths:
            return value
        missing = [v for v in _ENV_VAR.findall(value) if not os.environ.get(v)]
        if missing:
            raise ExperimentError(
                f"{where}: model set '{name}' takes the path of '{key}' from ${{{missing[0]}}}, which is not set; "
                f"export {missing[0]}=/path/to/checkpoint or pass --paths {key}=/path/to/checkpoint")
        return str(Path(_ENV_VAR.sub(lambda m: os.environ[m.group(1)], value)).expanduser().resolve())

    out = dict(model_set)
    if "base" in out:
        out["base"] = expand("base", out["base"])
    if isinstance(out.get("models"), Mapping):
        out["models"] = {k: expand(k, v) for k, v in out["models"].items()}
    return out


def _apply_paths(data: dict[str, Any], paths: Mapping[str, str], where: str) -> dict[str, Any]:
    if not paths:
        return data
    models = dict(data.get("models") or {})
    known = ["base"] + list(models)
    for key, value in paths.items():
        if key not in known:
            raise ExperimentError(f"{where}: --paths names '{key}', which is neither 'base' nor a model of model set "
                                  f"'{data.get('model_set')}' ({', '.join(known)})")
        from evomerge.io.hub import is_hub_id  # --paths base=org/name names a Hub repo unless ./org/name exists
        resolved = value if is_hub_id(value) else str(Path(value).expanduser().resolve())
        if key == "base":
            data["base"] = resolved
        else:
            models[key] = resolved
    data["models"] = models
    return data


def _normalize_paths(data: dict[str, Any]) -> dict[str, Any]:
    """'experiments/paper/../../zoo/base' -> 'zoo/base' (the same directory, as a reader expects it)."""
    if isinstance(data.get("base"), str):
        data["base"] = data["base"] if data["base"].startswith("hf://") else os.path.normpath(data["base"])
    if isinstance(data.get("models"), Mapping):
        data["models"] = {k: os.path.normpath(v) if isinstance(v, str) and not v.startswith("hf://") else v
                          for k, v in data["models"].items()}
    return data


def _validate(data: Mapping[str, Any], where: str) -> SweepExperiment:
    try:
        return SweepExperiment.model_validate(dict(data))
    except ValidationError as exc:
        raise ExperimentError(f"{where}: {validation_problems(exc, 'experiment')}") from None


def parse_paths(text: str | None) -> dict[str, str]:
    """'base=/m/qwen,coding=/m/coder' -> {'base': '/m/qwen', 'coding': '/m/coder'}."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ExperimentError(f"--paths: cannot read {part!r}; write name=path pairs separated by commas, "
                                  "e.g. base=/models/qwen,coding=/models/coder")
        out[key.strip()] = value.strip()
    return out
