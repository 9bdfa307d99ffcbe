"""The ask/tell interface every optimizer implements, and the genome <-> Optuna trial glue they share.

Every optimizer works on one Optuna study (the run's storage): `ask` creates a trial there and
returns its genome; `tell` reports the trial's objective values (oriented so that larger is better)
and constraint values (<= 0 means satisfied), or None for a failed evaluation. The runner finishes the
trial in the study itself; optimizers only learn from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import optuna

    from evomerge.search.space import SearchSpace


@dataclass
class Proposal:
    trial: "optuna.trial.Trial"
    values: dict[str, Any]  # the genome
    attrs: dict[str, Any] = field(default_factory=dict)  # optimizer bookkeeping, stored on the trial

    @property
    def number(self) -> int:
        return self.trial.number


class Optimizer(ABC):
    """One ask/tell interface over CMA-ES and the Optuna samplers."""

    name: str = "optimizer"

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """How many candidates make one generation (the batch of synchronous mode)."""

    @abstractmethod
    def ask(self) -> Proposal | None:
        """A new candidate, or None when the optimizer must hear results first (CMA-ES between generations)."""

    @abstractmethod
    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        """Report a finished candidate. objectives: maximised orientation; None: the evaluation failed."""

    def restore(self, trials: Sequence["optuna.trial.FrozenTrial"]) -> None:
        """Rebuild in-memory state from the study after a restart (the study itself is already loaded)."""

    def pending_after_restore(self, trial: "optuna.trial.FrozenTrial") -> dict[str, Any]:
        """Bookkeeping for a trial that was running when the previous process died (it is re-evaluated)."""
        return {}


def distributions(space: "SearchSpace") -> dict[str, "optuna.distributions.BaseDistribution"]:
    """Optuna distributions of the genes, in gene order."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out = {}
    for g in space.genes:
        out[g.name] = CategoricalDistribution(list(g.choices)) if g.categorical else FloatDistribution(g.low, g.high, log=g.log)
    return out


def suggest_genome(trial: "optuna.trial.Trial", space: "SearchSpace") -> dict[str, Any]:
    """Ask the trial for every gene, in a fixed order, so every trial has the same genome layout."""
    values = {}
    for g in space.genes:
        if g.categorical:
            values[g.name] = trial.suggest_categorical(g.name, list(g.choices))
        else:
            values[g.name] = trial.suggest_float(g.name, g.low, g.high, log=g.log)
    return values
