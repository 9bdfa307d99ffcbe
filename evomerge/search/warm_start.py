"""Warm starts: the first candidates of a search come from what is already known, not from random draws.

    warm_start: {references: true, from_runs: [runs/demo], from_sweeps: [runs/table1], limit: 12}

Sources, each read by a pure function of files that exist before the search starts:
- `references`: the base and each model, where the search space can express them as a genome (a space with
  per-model task-arithmetic weights can: the base is every weight 0, a model its one-hot weights; the
  bundled spaces, whose weights are shared and >= 0.1, cannot, and say so in the log);
- `from_sweeps`: the grid points of `evomerge sweep` run directories (their search-split scores rank them);
- `from_runs`: the finished top-rung, feasible trials of other search runs on the same base and models.

A source's merge is used only when this search space expresses it exactly: its recipe is encoded into a
genome and the genome's recipe must give every group the same method and parameters (e.g. a sweep's task
arithmetic at lambda 0.7 is not a point of `method_per_layer`, whose task arithmetic searches `weight` with
lambda 1, and is skipped). The candidates are handed out first by `ask` (the study gets them as enqueued
trials, marked `warm_start`), scored like any candidate (the evaluation cache answers those already scored
with the same inputs and suite settings, so a warm start from a run or sweep on the same inputs costs no
evaluation) and told to the optimizer, whose model or population starts from them. They count against the
budget. At most `limit` are used (default: one population), best first: references, then each source's
candidates by Pareto layer of the scores it recorded. On `--resume` the ones already in the study are not
asked again.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from evomerge.errors import ExperimentError, RecipeError, SearchSpaceError
from evomerge.search.base import Optimizer, Proposal, suggest_genome
from evomerge.search.pareto import pareto_front

if TYPE_CHECKING:
    import optuna

    from evomerge.search.experiment import Experiment
    from evomerge.search.space import SearchSpace
    from evomerge.recipe import MergeRecipe

log = logging.getLogger(__name__)

ATTR = "warm_start"  # trial user attribute: the candidate's source


@dataclass(frozen=True)
class WarmCandidate:
    source: str  # where it comes from, e.g. "reference:coding", "run:/runs/demo#27", "sweep:/runs/t1#all/TIES/..."
    genome: Mapping[str, Any]
    scores: tuple[float, ...] | None = None  # the source's own maximised scores (ranking only); None: references


# -------------------------------------------------------------------------------------------------
# expressing a recipe in a space
# -------------------------------------------------------------------------------------------------


def _same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return Path(a).resolve() == Path(b).resolve()


def express(space: "SearchSpace", recipe: "MergeRecipe") -> dict[str, Any] | None:
    """The genome of `space` that merges exactly like `recipe`, or None when the space cannot express it
    (other inputs, dtype or seed, a method the space does not search, a parameter it does not search at that
    value, a value outside its bounds or off its grid)."""
    if not _same_path(recipe.base, space.base) or len(recipe.models) != len(space.models) or \
            not all(_same_path(a, b) for a, b in zip(recipe.models, space.models)):
        return None
    if recipe.dtype != space.dtype or recipe.seed != space.seed:
        return None
    try:
        genome = space.encode(recipe)
        back = space.decode(genome)
    except (SearchSpaceError, RecipeError, KeyError):
        return None
    for group in space.groups:
        probe = group.probe_tensor()
        mine, theirs = back.rule_for(probe), recipe.rule_for(probe)
        if mine.method != theirs.method or not _same_parameters(mine.parameters, theirs.parameters):
            return None
    return genome


def _same_parameters(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal, floats to 1e-9 relative: a grid gene's point is computed through exp/log (the grid's 1e-5 decodes
    to 1.0000000000000004e-05), which no merge can tell apart."""
    if set(a) != set(b):
        return False
    return all(_close(a[k], b[k]) for k in a)


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) and \
            math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return x == y


def _recipe(data: Mapping[str, Any], where: str) -> "MergeRecipe":
    from evomerge.recipe import MergeRecipe

    return MergeRecipe.from_dict(dict(data), where=where)


# -------------------------------------------------------------------------------------------------
# sources
# -------------------------------------------------------------------------------------------------


def reference_candidates(space: "SearchSpace") -> list[WarmCandidate]:
    """The base (every task vector weighted 0) and each model (its own weight 1, the others 0), as task
    arithmetic, where the space searches per-model task-arithmetic weights over a range holding 0 and 1."""
    out = []
    n = len(space.models)
    targets = ([("base", [0.0] * n)] if space.base else []) + \
        [(name, [1.0 if j == i else 0.0 for j in range(n)]) for i, name in enumerate(space.model_names)]
    for name, weights in targets:
        genome = None
        if space.base is not None and "task_arithmetic" in space.method_names:
            recipe = _recipe({"base": space.base, "models": space.models, "method": "task_arithmetic",
                              "parameters": {"weight": weights}, "dtype": space.dtype, "seed": space.seed},
                             f"warm_start.references ({name})")
            genome = express(space, recipe)
        if genome is None:
            log.info("warm start: the search space '%s' cannot express the reference '%s' as a genome; skipped",
                     space.spec.name, name)
            continue
        out.append(WarmCandidate(f"reference:{name}", genome))
    return out


def run_candidates(run_dir: str | Path, space: "SearchSpace", where: str = "warm_start.from_runs") -> list[WarmCandidate]:
    """The finished, feasible top-rung trials of another search run that this space expresses exactly."""
    import optuna
    from optuna.trial import TrialState

    from evomerge.io.yaml_files import read_yaml_file
    from evomerge.search.experiment import Experiment
    from evomerge.search.storage import storage_url, study_name

    run_dir = Path(run_dir)
    exp_file = run_dir / "experiment.yaml"
    if not exp_file.is_file():
        raise ExperimentError(f"{where}: {run_dir} is not a search run directory (no experiment.yaml)")
    other = Experiment.from_dict(read_yaml_file(exp_file, ExperimentError, "experiment"), where=str(exp_file))
    _check_same_inputs(other.base, other.models, space, f"{where}: {run_dir}")
    url = storage_url(run_dir, other.storage)
    name = study_name(run_dir)
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise ExperimentError(f"{where}: {run_dir}: its study {name!r} is not in {url}") from None
    top = len(other.fidelity.rungs) - 1
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        result = t.user_attrs.get("result", {})
        if result.get("fidelity") != top or not result.get("feasible", False) or "recipe" not in t.user_attrs:
            continue
        genome = express(space, _recipe(t.user_attrs["recipe"], f"{run_dir} trial {t.number}"))
        if genome is None:
            continue
        out.append(WarmCandidate(f"run:{run_dir}#{t.number}", genome, tuple(float(v) for v in result["maximised"])))
    return out


def sweep_candidates(run_dir: str | Path, space: "SearchSpace", where: str = "warm_start.from_sweeps") -> list[WarmCandidate]:
    """The scored grid points of a sweep run directory (blocks merging this space's models) that this space
    expresses exactly, with their search-split objective means."""
    from pydantic import ValidationError

    from evomerge.errors import validation_problems
    from evomerge.sweep_experiment import SweepExperiment
    from evomerge.io.yaml_files import read_yaml_file

    run_dir = Path(run_dir)
    exp_file, state_file = run_dir / "experiment.yaml", run_dir / "sweep.json"
    if not exp_file.is_file() or not state_file.is_file():
        raise ExperimentError(f"{where}: {run_dir} is not a sweep run directory (experiment.yaml and sweep.json)")
    try:
        sweep = SweepExperiment.model_validate(read_yaml_file(exp_file, ExperimentError, "sweep experiment"))
    except ValidationError as exc:
        raise ExperimentError(f"{exp_file}: {validation_problems(exc, 'experiment')}") from None
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{state_file}: not valid JSON ({exc})") from None
    out = []
    for key, entry in state.get("points", {}).items():
        scored = entry.get("search", {})
        if "suites" not in scored:
            continue
        block, label, varied_json = key.split("/", 2)
        if block not in sweep.blocks() or label not in sweep.sweep.methods:
            continue
        cfg = sweep.sweep.methods[label]
        models = [sweep.models[m] for m in sweep.blocks()[block].models]
        recipe = _recipe({"base": sweep.base, "models": models, "method": cfg.method,
                          "parameters": {**cfg.parameters, **json.loads(varied_json)}, "dtype": sweep.dtype,
                          "seed": sweep.seed}, f"{run_dir}: point {key}")
        genome = express(space, recipe)
        if genome is None:
            continue
        scores = tuple(float(scored["suites"][s]["mean"]) for s in sweep.columns(block) if s in scored["suites"])
        out.append(WarmCandidate(f"sweep:{run_dir}#{key}", genome, scores))
    return out


def _check_same_inputs(base: str | None, models: Mapping[str, str], space: "SearchSpace", where: str) -> None:
    if list(models) != space.model_names or not _same_path(base, space.base) or \
            not all(_same_path(p, q) for p, q in zip(models.values(), space.models)):
        raise ExperimentError(f"{where} merges other inputs (base {base}, models {dict(models)}) than this search "
                              f"(base {space.base}, models {dict(zip(space.model_names, space.models))})")


# -------------------------------------------------------------------------------------------------
# choosing
# -------------------------------------------------------------------------------------------------


def pareto_layers(points: Sequence[Sequence[float]]) -> list[int]:
    """The non-dominated sorting rank of each point (0: the front; maximised)."""
    rank = [-1] * len(points)
    left = list(range(len(points)))
    layer = 0
    while left:
        front = [left[i] for i in pareto_front([points[i] for i in left])]
        for i in front:
            rank[i] = layer
        left = [i for i in left if rank[i] < 0]
        layer += 1
    return rank


def rank_candidates(groups: Sequence[Sequence[WarmCandidate]], space: "SearchSpace") -> list[WarmCandidate]:
    """References first, then every source's candidates by Pareto layer of their own scores (ties: source
    order, then the source's order); duplicates (the same merge) keep the first."""
    keyed = []
    for g, cands in enumerate(groups):
        scored = [i for i, c in enumerate(cands) if c.scores is not None]
        layers = dict(zip(scored, pareto_layers([cands[i].scores for i in scored]))) if scored else {}
        for i, c in enumerate(cands):
            keyed.append(((-1 if c.scores is None else layers[i], g, i), c))
    out, seen = [], set()
    for _, c in sorted(keyed, key=lambda kc: kc[0]):
        ident = json.dumps(space.decode(c.genome).to_dict(), sort_keys=True, default=str)
        if ident not in seen:
            seen.add(ident)
            out.append(c)
    return out


def load_warm_start(exp: "Experiment", space: "SearchSpace") -> list[WarmCandidate]:
    """Every warm-start candidate the experiment asks for, ranked, at most `limit` (default: one population)."""
    w = exp.warm_start
    if w is None:
        return []
    groups: list[list[WarmCandidate]] = [reference_candidates(space)] if w.references else []
    for i, d in enumerate(w.from_runs):
        groups.append(run_candidates(d, space, f"warm_start.from_runs[{i}]"))
    for i, d in enumerate(w.from_sweeps):
        groups.append(sweep_candidates(d, space, f"warm_start.from_sweeps[{i}]"))
    ranked = rank_candidates(groups, space)
    limit = w.limit if w.limit is not None else exp.optimizer.population
    log.info("warm start: %d candidate(s) expressible in the space, using %d", len(ranked), min(limit, len(ranked)))
    return ranked[:limit]


# -------------------------------------------------------------------------------------------------
# handing them out
# -------------------------------------------------------------------------------------------------


class WarmStartOptimizer(Optimizer):
    """Hands out the warm-start candidates first (enqueued in the study, so the sampler sees them as its own
    trials), then asks the wrapped optimizer."""

    def __init__(self, inner: Optimizer, study: "optuna.Study", space: "SearchSpace",
                 candidates: Sequence[WarmCandidate]):
        self.inner = inner
        self.name = inner.name
        self.study = study
        self.space = space
        self._todo = list(candidates)

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    def ask(self) -> Proposal | None:
        if not self._todo:
            return self.inner.ask()
        cand = self._todo.pop(0)
        attrs = {ATTR: cand.source}
        self.study.enqueue_trial(dict(cand.genome), user_attrs=attrs, skip_if_exists=False)
        trial = self.study.ask()
        return Proposal(trial, suggest_genome(trial, self.space), attrs)

    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        self.inner.tell(trial_number, objectives, constraints)

    def restore(self, trials: Sequence["optuna.trial.FrozenTrial"]) -> None:
        asked = {t.user_attrs.get(ATTR) for t in trials}
        self._todo = [c for c in self._todo if c.source not in asked]
        self.inner.restore(trials)

    def pending_after_restore(self, trial: "optuna.trial.FrozenTrial") -> dict[str, Any]:
        return self.inner.pending_after_restore(trial)


def warm_started(optimizer: Optimizer, study: "optuna.Study", space: "SearchSpace", exp: "Experiment",
                 candidates: "list[WarmCandidate] | None" = None) -> Optimizer:
    """`optimizer`, preceded by the experiment's warm-start candidates (unchanged when it asks for none);
    `candidates`: those `load_warm_start` gave already (the loop loads them before creating the run)."""
    if exp.warm_start is None:
        return optimizer
    # (CMA-ES ignores trials it did not propose; the experiment refuses warm_start with it)
    if candidates is None:
        candidates = load_warm_start(exp, space)
    if not candidates:
        log.warning("warm start: no candidate of the given sources is expressible in the search space '%s'",
                    space.spec.name)
    return WarmStartOptimizer(optimizer, study, space, candidates)


__all__ = ["WarmCandidate", "express", "reference_candidates", "run_candidates", "sweep_candidates",
           "rank_candidates", "load_warm_start", "WarmStartOptimizer", "warm_started"]
