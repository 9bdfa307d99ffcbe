"""The experiment YAML: what to merge, where to search, what to maximise and how to spend the budget.

Validated once, here, with pydantic; relative paths are resolved against the YAML's folder. Example:

```yaml
name: demo
base: zoo/base
models: {coding: zoo/coding, tool_use: zoo/tool_use, memory: zoo/memory}
search_space: method_per_layer          # bundled name, a path, or an inline mapping
space: {layer_groups: {count: 2}}       # optional changes to the space
objectives:                             # each a suite (maximised); `weight` is used by scalarising optimisers
  coding: {kind: coding, data: toy}
  tool_use: {kind: tool_use, data: toy, weight: 2}
cost: {metric: completion_chars}        # optional extra objective, minimised
constraints: {max_drop: 0.05}           # no objective below the base's score - 0.05
optimizer: {name: nsga2, population: 16}
budget: 200                             # candidates (trials)
fidelity: {rungs: [8, null], z: 1.0}    # items per suite on each rung; null = the whole split
heldout: {split: test}                  # front members re-scored here at the end
workers: {kind: local, count: 1, mode: async}
seed: 0
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluators.suites.base import SuiteConfig
from evomerge.yamlio import read_yaml_file
from evomerge.errors import ExperimentError, validation_problems

OPTIMIZERS = ("nsga2", "nsga3", "cmaes", "tpe", "random", "gp")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    """One objective: a suite (maximised) and its weight for scalarising optimisers."""

    suite: SuiteConfig
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data):
        # `coding: {kind: coding, data: toy, weight: 2}`: every key but `weight` belongs to the suite
        if isinstance(data, Mapping) and "suite" not in data:
            data = dict(data)
            weight = data.pop("weight", 1.0)
            return {"suite": data, "weight": weight}
        return data


class Cost(_Strict):
    """An extra objective to minimise, measured on the objective suites' outputs."""

    metric: Literal["completion_chars", "seconds"] = "completion_chars"
    weight: float = Field(1.0, ge=0)


class Constraints(_Strict):
    # "do no harm": every objective at least (reference score - max_drop); None: unconstrained
    max_drop: float | None = Field(None, ge=0)
    relative_to: Literal["base", "specialist"] = "base"  # specialist: the model named like the objective


class Optimizer(_Strict):
    name: Literal["nsga2", "nsga3", "cmaes", "tpe", "random", "gp"] = "nsga2"
    population: int = Field(16, ge=2)  # NSGA population / CMA-ES popsize / batch size in synchronous mode
    settings: dict[str, Any] = Field(default_factory=dict)  # passed to the sampler / CMA-ES (see evomerge/search)


class WarmStart(_Strict):
    """Candidates the search starts from, before the optimizer proposes its own (evomerge/search/warm_start.py).
    Each is scored like any candidate (the evaluation cache answers those already scored on the same inputs)
    and counts against the budget."""

    references: bool = False  # the base and each model, where the search space can express them as a genome
    from_runs: list[str] = Field(default_factory=list)  # run directories (their storage's completed trials)
    from_sweeps: list[str] = Field(default_factory=list)  # sweep run directories (their grid points)
    limit: int | None = Field(None, ge=1)  # at most this many, best first (default: the optimizer's population)


class Fidelity(_Strict):
    rungs: list[int | None] = Field(default_factory=lambda: [None])
    z: float = Field(1.0, ge=0)  # how many standard errors of doubt a candidate gets before it is dropped

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v):
        from evomerge.search.fidelity import FidelityLadder

        FidelityLadder(tuple(v))  # raises ValueError with the reason
        if any(x is not None and x < 1 for x in v):
            raise ValueError("rung limits must be >= 1 (or null for the whole split)")
        return v


class Heldout(_Strict):
    enabled: bool = True
    split: str = "test"
    limit: int | None = Field(None, ge=1)


class Workers(_Strict):
    kind: Literal["local", "inline", "ray"] = "local"  # local: worker processes; inline: this process
    count: int = Field(1, ge=1)
    mode: Literal["async", "sync"] = "async"  # sync: generation by generation, reproducible
    devices: list[str] | None = None  # e.g. [cuda:0, cuda:1]; default: one GPU each if present, else cpu
    ray_address: str | None = None  # an existing Ray cluster; None starts a local one
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(1, ge=0)
    threads: int | None = Field(None, ge=1)  # torch CPU threads per worker; default: the cores shared among local workers


class Generator(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    dtype: str | None = None  # None: float32 on CPU, bfloat16 on GPU
    options: dict[str, Any] = Field(default_factory=dict)  # backend keyword arguments (e.g. batch_size)


class Cache(_Strict):
    enabled: bool = True
    dir: str | None = None  # default: $EVOMERGE_CACHE or ~/.cache/evomerge


def with_default_kinds(data: Any) -> Any:
    """`coding: {data: toy}`: an objective's suite kind defaults to its name, as in `evomerge evaluate`."""
    if isinstance(data, Mapping) and isinstance(data.get("objectives"), Mapping):
        objectives = {}
        for name, obj in data["objectives"].items():
            if obj is None:
                obj = {}
            if isinstance(obj, Mapping):
                obj = dict(obj)
                if isinstance(obj.get("suite"), Mapping):
                    obj["suite"] = {"kind": name, **obj["suite"]}
                else:
                    obj.setdefault("kind", name)
            objectives[name] = obj
        data = {**data, "objectives": objectives}
    return data


class Experiment(_Strict):
    name: str = "search"
    base: str | None = None
    models: dict[str, str] = Field(min_length=1)
    search_space: str | dict[str, Any] = "method_per_layer"
    space: dict[str, Any] = Field(default_factory=dict)  # overrides merged into the search space
    dtype: Literal["float32", "float16", "bfloat16"] | None = None  # merged weights' dtype (recipe dtype)
    objectives: dict[str, Objective] = Field(min_length=1)
    cost: Cost | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    warm_start: WarmStart | None = None  # None (not {}): runs stored before this field still resume
    budget: int = Field(100, ge=1)
    fidelity: Fidelity = Field(default_factory=Fidelity)
    heldout: Heldout = Field(default_factory=Heldout)
    references: bool = True  # score the base and each model first (reference point, constraints, report)
    reference_point: list[float] | None = None  # hypervolume reference (objective order, cost last)
    workers: Workers = Field(default_factory=Workers)
    generator: Generator = Field(default_factory=Generator)
    cache: Cache = Field(default_factory=Cache)
    storage: str | None = None  # SQLAlchemy URL; default sqlite in the run directory
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _objective_kinds(cls, data):
        return with_default_kinds(data)

    @model_validator(mode="after")
    def _consistent(self):
        if self.cost is not None and "cost" in self.objectives:
            raise ValueError("an objective is named 'cost', which clashes with the cost objective; rename it")
        if self.warm_start is not None and self.optimizer.name == "cmaes":
            raise ValueError("warm_start: CMA-ES learns only from the candidates it proposed itself; use "
                             "optimizer.settings.initial_design for its first generation, or another optimizer")
        if self.constraints.max_drop is not None and not self.references:
            raise ValueError("constraints.max_drop needs the reference scores: set references: true")
        if self.constraints.max_drop is not None and self.base is None and self.constraints.relative_to == "base":
            raise ValueError("constraints relative to the base need a base model; use relative_to: specialist")
        if self.cost is not None and self.reference_point is None and (self.base is None or not self.references):
            raise ValueError("a cost objective needs a reference point: give reference_point, or a base with "
                             "references: true (its scores are the default)")
        if self.reference_point is not None and len(self.reference_point) != len(self.objective_names):
            raise ValueError(
                f"reference_point has {len(self.reference_point)} values for {len(self.objective_names)} objectives "
                f"({', '.join(self.objective_names)})")
        for name, obj in self.objectives.items():
            if obj.suite.split == self.heldout.split and self.heldout.enabled:
                raise ValueError(f"objective '{name}' searches on split '{obj.suite.split}', "
                                 f"which is also the held-out split; use different splits")
        return self

    # -- derived ---------------------------------------------------------------------------------
    @property
    def objective_names(self) -> list[str]:
        return list(self.objectives) + (["cost"] if self.cost is not None else [])

    @property
    def suite_names(self) -> list[str]:
        return list(self.objectives)

    def signs(self) -> list[float]:
        """+1 for maximised objectives, -1 for the (minimised) cost: `sign * value` is always maximised."""
        return [1.0] * len(self.objectives) + ([-1.0] if self.cost is not None else [])

    def weights(self) -> list[float]:
        return [o.weight for o in self.objectives.values()] + ([self.cost.weight] if self.cost is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "experiment", root: Path | None = None) -> "Experiment":
        if not isinstance(data, Mapping):
            raise ExperimentError(f"{where}: expected a mapping (name, base, models, objectives, ...)")
        data = resolve_paths(dict(data), root) if root is not None else dict(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ExperimentError(f"{where}: {validation_problems(exc, 'experiment')}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Experiment":
        path = Path(path)
        data = read_yaml_file(path, ExperimentError, "experiment")
        return cls.from_dict(data, where=str(path), root=path.resolve().parent)


def resolve_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Checkpoint paths, a search-space path and suite data paths are relative to the experiment file."""

    def rel(p: Any) -> Any:
        if not isinstance(p, str):
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else root / q)

    if isinstance(data.get("base"), str):
        data["base"] = rel(data["base"])
    if isinstance(data.get("models"), Mapping):
        data["models"] = {k: rel(v) for k, v in data["models"].items()}
    space = data.get("search_space")
    if isinstance(space, str) and (space.endswith((".yaml", ".yml")) or "/" in space):
        data["search_space"] = rel(space)
    objectives = data.get("objectives")
    if isinstance(objectives, Mapping):
        fixed = {}
        for name, obj in objectives.items():
            if isinstance(obj, Mapping):
                obj = dict(obj)
                suite = obj
                if isinstance(obj.get("suite"), Mapping):
                    suite = obj["suite"] = dict(obj["suite"])
                # `data` is a bundled data-set name unless a file or folder of that name sits next to the YAML
                if isinstance(suite.get("data"), str) and (root / suite["data"]).exists():
                    suite["data"] = rel(suite["data"])
            fixed[name] = obj
        data["objectives"] = fixed
    warm = data.get("warm_start")
    if isinstance(warm, Mapping):
        data["warm_start"] = {**warm, **{k: [rel(p) for p in warm[k]] for k in ("from_runs", "from_sweeps")
                                         if isinstance(warm.get(k), list)}}
    cache = data.get("cache")
    if isinstance(cache, Mapping) and isinstance(cache.get("dir"), str):
        data["cache"] = {**cache, "dir": rel(cache["dir"])}
    return data
