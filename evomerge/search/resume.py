"""Resuming a search from its storage: discard half-created trials, reload finished ones, and hand back
the trials that were running when the process stopped, to be scored again under their own numbers
(their finished rungs are kept), so nothing completed is lost or repeated and the budget holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from evomerge.errors import ExperimentError
from evomerge.search.fidelity import Scored

if TYPE_CHECKING:
    import optuna

    from evomerge.search.base import Optimizer
    from evomerge.search.record import RunRecord

log = logging.getLogger(__name__)

DISCARDED = "discarded"  # user attribute of a trial that is not part of the run (see `recover`)


@dataclass
class Unfinished:
    """A trial that was running when the previous process stopped."""

    number: int
    trial: "optuna.trial.Trial"  # writable: its rungs and result are recorded as it is scored again
    genome: dict[str, Any]
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # finished rungs: rung -> suite -> result


def writable_trial(study: "optuna.Study", frozen: "optuna.trial.FrozenTrial") -> "optuna.trial.Trial":
    """A writable handle on a stored RUNNING trial. Optuna has no public way from a stored trial to a
    `Trial`; its storage id is the documented key of `Trial(study, trial_id)`. (Its public alternative,
    `enqueue_trial`, would re-score the genome under a new number, which breaks resuming under one's own
    number, on which CMA-ES's replay of its generations relies.)"""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def recover(study: "optuna.Study", optimizer: "Optimizer", genes: Sequence[str], record: "RunRecord",
            space_name: Any, rung_scores: dict[int, dict[int, Scored]],
            score_of: Callable[[Mapping[str, Any]], Scored], signs: np.ndarray) -> list[Unfinished]:
    """Discard trials that never started or died before their genome was stored; fill `rung_scores` with
    every finished trial's rungs (and the finished rungs of the unfinished ones, scored by `score_of`);
    restore the optimizer; return the unfinished trials in number order."""
    from optuna.trial import TrialState

    for _ in [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]:
        trial = study.ask()  # pops the waiting (enqueued, never started) trial
        trial.set_user_attr(DISCARDED, "enqueued but never started before a restart")
        study.tell(trial, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    check_same_genes(trials, genes, record, space_name)
    valid, pending = [], []
    for t in trials:
        if t.user_attrs.get(DISCARDED):
            continue
        if t.state == TrialState.RUNNING:
            if set(t.params) != set(genes):  # died between ask and its genome being stored
                writable_trial(study, t).set_user_attr(DISCARDED, "genome incomplete when the previous process stopped")
                study.tell(t.number, state=TrialState.FAIL)
                continue
            unfinished = Unfinished(t.number, writable_trial(study, t), dict(t.params))
            if t.user_attrs.get("rungs"):
                saved = record.read_trial_items(t.number)
                unfinished.results = {int(r): saved[r] for r in t.user_attrs["rungs"]}
                for r, res in unfinished.results.items():
                    rung_scores[r][t.number] = score_of(res)
            pending.append(unfinished)
        valid.append(t)
        if t.state.is_finished() and t.state != TrialState.RUNNING:
            for r, res in (t.user_attrs.get("rungs") or {}).items():
                rung_scores[int(r)][t.number] = Scored(tuple(np.asarray(res["values"]) * signs), tuple(res["stderrs"]))
    optimizer.restore(valid)
    if pending:
        log.info("resuming: %d trial(s) were running when the run stopped; scoring them again", len(pending))
    return sorted(pending, key=lambda u: u.number)


def check_same_genes(trials: Sequence["optuna.trial.FrozenTrial"], genes: Sequence[str], record: "RunRecord",
                     space_name: Any) -> None:
    """The experiment names its space (a bundled name or a file), so editing that space between two runs is
    not a change of the experiment; it is one of the genome, which stored trials cannot be decoded under."""
    from optuna.trial import TrialState

    wanted = set(genes)
    for t in trials:
        if t.user_attrs.get(DISCARDED) or not t.params:
            continue
        stored = set(t.params)
        # a trial killed while its genome was being stored holds part of it (`recover` discards it)
        if stored == wanted or (t.state == TrialState.RUNNING and stored < wanted):
            continue
        raise ExperimentError(
            f"{record.dir}: cannot resume: trial {t.number} has other genes than the search space "
            f"'{space_name}' gives now (not in the space now: {sorted(stored - wanted)[:4]}; new: "
            f"{sorted(wanted - stored)[:4]}); was the space edited since the run started? Restore it, or start "
            f"a new run with another --out")
