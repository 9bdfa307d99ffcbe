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
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, ValidationError, field_validator, model_validator

from evomerge.errors import ExperimentError, validation_problems
from evomerge.scoring.settings import (Cache, Generator, Heldout, Objective, ScoredModels, Strict, Workers,  # noqa: F401
                                       relative_to, resolve_paths, with_default_kinds)
from evomerge.yamlio import read_yaml_file

OPTIMIZERS = ("nsga2", "nsga3", "cmaes", "tpe", "random", "gp", "additive")


class Cost(Strict):
    """An extra objective to minimise, measured on the objective suites' outputs."""

    metric: Literal["completion_chars", "seconds"] = "completion_chars"
    weight: float = Field(1.0, ge=0)


class Constraints(Strict):
    # "do no harm": every objective at least (reference score - max_drop); None: unconstrained
    max_drop: float | None = Field(None, ge=0)
    relative_to: Literal["base", "specialist"] = "base"  # specialist: the model named like the objective


# optimizer.population when the experiment gives none. `additive` learns from every finished batch, so a
# smaller batch means fewer start-up draws and earlier model proposals (8 is what benchmarks/search_efficiency.py
# measured it with); the others keep their historical 16.
DEFAULT_POPULATION = {"additive": 8}


class Optimizer(Strict):
    # The default is `additive`: in benchmarks/search_efficiency.py (5 seeds; both bundled per-layer spaces at
    # 8 and 16 layer groups; the synthetic and the real-score surrogate families) it reached random search's
    # 200-evaluation hypervolume in a median of 18-35 evaluations, where NSGA-II (the default before) needed
    # 45-118, CMA-ES 17-61 and TPE 36-105, at 10-21 ms of CPU per candidate (docs/searching.md). On a
    # non-additive variant (`pairwise`) it is not better than CMA-ES (33-49 against 5-44).
    name: Literal["nsga2", "nsga3", "cmaes", "tpe", "random", "gp", "additive"] = "additive"
    # NSGA population / CMA-ES popsize / batch size in synchronous mode; None: DEFAULT_POPULATION, else 16
    population: int | None = Field(None, ge=2)
    settings: dict[str, Any] = Field(default_factory=dict)  # passed to the sampler / CMA-ES (see evomerge/search)

    @model_validator(mode="after")
    def _default_population(self):
        if self.population is None:
            self.population = DEFAULT_POPULATION.get(self.name, 16)
        return self


class WarmStart(Strict):
    """Candidates the search starts from, before the optimizer proposes its own (evomerge/search/warm_start.py).
    Each is scored like any candidate (the evaluation cache answers those already scored on the same inputs)
    and counts against the budget."""

    references: bool = False  # the base and each model, where the search space can express them as a genome
    from_runs: list[str] = Field(default_factory=list)  # run directories (their storage's completed trials)
    from_sweeps: list[str] = Field(default_factory=list)  # sweep run directories (their grid points)
    limit: int | None = Field(None, ge=1)  # at most this many, best first (default: the optimizer's population)


class Fidelity(Strict):
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


class Experiment(ScoredModels):
    """A search: `ScoredModels` (base, models, dtype, objectives, generator, workers) and what to search."""

    name: str = "search"
    search_space: str | dict[str, Any] = "method_per_layer"
    space: dict[str, Any] = Field(default_factory=dict)  # overrides merged into the search space
    cost: Cost | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    warm_start: WarmStart | None = None  # None (not {}): runs stored before this field still resume
    budget: int = Field(100, ge=1)
    fidelity: Fidelity = Field(default_factory=Fidelity)
    heldout: Heldout = Field(default_factory=Heldout)
    references: bool = True  # score the base and each model first (reference point, constraints, report)
    reference_point: list[float] | None = None  # hypervolume reference (objective order, cost last)
    cache: Cache = Field(default_factory=Cache)
    storage: str | None = None  # SQLAlchemy URL; default sqlite in the run directory
    seed: int = 0

    yaml_order: ClassVar[tuple[str, ...]] = (
        "name", "base", "models", "search_space", "space", "dtype", "objectives", "cost", "constraints", "optimizer",
        "budget", "fidelity", "heldout", "references", "reference_point", "workers", "generator", "cache", "storage",
        "seed")

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
        if self.heldout.enabled:
            self.check_heldout_split(self.heldout, "searches on")
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

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "experiment", root: Path | None = None) -> "Experiment":
        if not isinstance(data, Mapping):
            raise ExperimentError(f"{where}: expected a mapping (name, base, models, objectives, ...)")
        data = resolve_paths(dict(data), root) if root is not None else dict(data)
        warm = data.get("warm_start")
        if root is not None and isinstance(warm, Mapping):  # run directories are relative to the experiment file
            data["warm_start"] = {**warm, **{k: [relative_to(root, p) for p in warm[k]]
                                             for k in ("from_runs", "from_sweeps") if isinstance(warm.get(k), list)}}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ExperimentError(f"{where}: {validation_problems(exc, 'experiment')}") from None

    def keeping_stored_optimizer(self, stored: Mapping[str, Any]) -> "Experiment":
        """For `--resume` with a YAML that leaves `optimizer` unset: the run keeps the optimizer it started
        with. The default changed (nsga2 -> additive); a resume must neither switch optimizers under a
        running study nor be refused because a default moved."""
        if "optimizer" in self.model_fields_set or not isinstance(stored.get("optimizer"), Mapping):
            return self
        try:
            optimizer = Optimizer.model_validate(stored["optimizer"])
        except ValidationError:
            return self  # check_resumable then reports the difference
        return self.model_copy(update={"optimizer": optimizer})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Experiment":
        path = Path(path)
        data = read_yaml_file(path, ExperimentError, "experiment")
        return cls.from_dict(data, where=str(path), root=path.resolve().parent)


