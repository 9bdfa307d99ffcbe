"""NSGA-II, NSGA-III, TPE and random search: Optuna samplers behind the ask/tell interface.

The sampler decides; the study (the run's storage) remembers. Constraints reach the samplers that
support them (NSGA-II/III, TPE) through the trial's stored result, so infeasible
candidates lose to feasible ones (feasibility-first selection, Deb 2000).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from evomerge.errors import ExperimentError
from evomerge.search.base import Optimizer, Proposal, suggest_genome

if TYPE_CHECKING:
    import optuna

    from evomerge.search.space import SearchSpace

# setting name -> the crossover class of optuna.samplers.nsgaii it selects
_CROSSOVERS = {
    "uniform": "UniformCrossover", "blxalpha": "BLXAlphaCrossover", "sbx": "SBXCrossover",
    "vsbx": "VSBXCrossover", "undx": "UNDXCrossover", "spx": "SPXCrossover",
}


def trial_constraints(trial: "optuna.trial.FrozenTrial") -> Sequence[float]:
    """Constraint values the runner stored with the trial's result (<= 0: satisfied)."""
    return trial.user_attrs.get("result", {}).get("constraints", ())


def _native_constraints() -> bool:
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: samplers read them from the trial


def record_constraints(trial: "optuna.trial.Trial", constraints: Sequence[float]) -> None:
    """Give the samplers a trial's constraint values (before it is told)."""
    if _native_constraints():
        for i, value in enumerate(constraints):
            trial.set_constraint(f"c{i}", value)


def build_sampler(name: str, population: int, seed: int, settings: Mapping[str, Any],
                  constrained: bool, space: "SearchSpace | None" = None) -> "optuna.samplers.BaseSampler":
    """The Optuna sampler for `name` with the experiment's settings (unknown settings are an error).
    `gp` needs the search space (it writes the genes of unpicked methods at their midpoint)."""
    import optuna

    settings = dict(settings)
    constraints = {"constraints_func": trial_constraints} if constrained and not _native_constraints() else {}
    if name == "gp":
        from evomerge.search.gp import build_gp_sampler

        if space is None:
            raise ValueError("build_sampler('gp', ...) needs the search space")
        return build_gp_sampler(space, seed, settings, **constraints)
    with warnings.catch_warnings():  # NSGA-III and the crossovers are marked experimental; say it once, in the docs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _build(name, population, seed, settings, constraints)


def _build(name, population, seed, settings, constraints):
    import optuna
    from optuna.samplers import nsgaii

    try:
        if name in ("nsga2", "nsga3"):
            # Optuna's default mutation rate (1 / number of genes) is too low when many genes are inactive
            # (the parameters of methods a group did not pick): 0.1 reached random search's 200-evaluation
            # hypervolume in fewer evaluations (benchmarks/search_efficiency.py)
            settings.setdefault("mutation_prob", 0.1)
            crossover = settings.pop("crossover", "sbx")
            if crossover not in _CROSSOVERS:
                raise ExperimentError(f"optimizer.settings.crossover: {crossover!r} is not one of {sorted(_CROSSOVERS)}")
            cls = optuna.samplers.NSGAIISampler if name == "nsga2" else optuna.samplers.NSGAIIISampler
            return cls(population_size=population, seed=seed, crossover=getattr(nsgaii, _CROSSOVERS[crossover])(),
                       **constraints, **settings)
        if name == "tpe":
            settings.setdefault("multivariate", True)
            settings.setdefault("constant_liar", True)  # parallel asks do not all land on the same spot
            settings.setdefault("n_startup_trials", min(population, 10))
            return optuna.samplers.TPESampler(seed=seed, **constraints, **settings)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **settings)
    except TypeError as exc:
        raise ExperimentError(f"optimizer.settings for '{name}': {exc}") from None
    raise ExperimentError(f"optimizer '{name}' is not an Optuna sampler")


def resumed_seed(seed: int, n_trials: int) -> int:
    """A resumed run reseeds its sampler by how far it got, so it does not redraw the same first candidates."""
    if n_trials == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{n_trials}".encode()).digest()[:4], "big")


class OptunaOptimizer(Optimizer):
    """Ask/tell over an Optuna study whose sampler proposes every gene of the space."""

    def __init__(self, name: str, study: "optuna.Study", space: "SearchSpace", population: int):
        self.name = name
        self.study = study
        self.space = space
        self._population = population

    @property
    def batch_size(self) -> int:
        return self._population

    def ask(self) -> Proposal:
        trial = self.study.ask()
        return Proposal(trial, suggest_genome(trial, self.space))

    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        # The runner finishes the trial in the study (values, state, attributes); the sampler reads it from there.
        return None
