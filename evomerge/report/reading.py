"""Reading a search run directory (the run record written by evomerge.search.record) for the report."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomerge.errors import ExperimentError
from evomerge.search.record import evaluations_per_rung
from evomerge.search.storage import storage_url, stored_trials, study_name
from evomerge.yamlio import load_yaml

if TYPE_CHECKING:
    from evomerge.search.experiment import Experiment


@dataclass
class RunData:
    dir: Path
    experiment: Experiment
    trials: list[Any]  # finished (COMPLETE / FAIL) FrozenTrials, in completion order
    running: int
    references: dict[str, Any]
    heldout: dict[str, Any]
    front: dict[str, Any]
    hypervolume: list[tuple[int, float, int]] = field(default_factory=list)  # (evaluations, hv, front size)

    @property
    def complete(self) -> list[Any]:
        return [t for t in self.trials if t.state.name == "COMPLETE"]

    @property
    def failed(self) -> list[Any]:
        return [t for t in self.trials if t.state.name == "FAIL"]

    def trial(self, number: int):
        for t in self.trials:
            if t.number == number:
                return t
        raise ExperimentError(f"{self.dir}: no finished trial {number} (finished trials: {len(self.trials)})")

    def evaluations_per_rung(self) -> list[int]:
        return evaluations_per_rung(self.trials, len(self.experiment.fidelity.rungs))


def load_run(run_dir: str | Path) -> RunData:
    from optuna.trial import TrialState

    from evomerge.search.experiment import Experiment

    run_dir = Path(run_dir)
    exp_file = run_dir / "experiment.yaml"
    if not exp_file.is_file():
        raise ExperimentError(f"{run_dir}: not a search run directory (no experiment.yaml)")
    exp = Experiment.from_dict(load_yaml(exp_file.read_text()), where=str(exp_file))
    all_trials = stored_trials(storage_url(run_dir, exp.storage), study_name(run_dir))
    trials = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.FAIL) and not t.user_attrs.get("discarded")]
    trials.sort(key=lambda t: (t.datetime_complete or dt.datetime.min, t.number))
    running = sum(t.state == TrialState.RUNNING for t in all_trials)

    def read(name: str, default: Any) -> Any:
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else default

    hv = []
    hv_file = run_dir / "hypervolume.csv"
    if hv_file.is_file():
        for line in hv_file.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) == 4:
                hv.append((int(parts[0]), float(parts[2]), int(parts[3])))
    return RunData(run_dir, exp, trials, running, read("references.json", {}), read("heldout.json", {"trials": {}, "references": {}}),
                   read("front.json", {"members": []}), hv)
