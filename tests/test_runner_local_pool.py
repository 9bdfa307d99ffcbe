"""The default local pool: worker processes; a worker that dies mid-candidate fails that candidate only."""

import optuna
import pytest

from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import study_name

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.mark.slow  # every worker process imports torch and transformers (~10 s each on 2 cores)
def test_a_dead_worker_process_fails_its_candidate_and_is_replaced(tiny_family, tmp_path):
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=6, references=False, heldout={"enabled": False},
                                  workers={"kind": "local", "count": 2, "threads": 1})
    exp_dict["objectives"]["coding"]["options"]["exit_mod"] = 3  # the worker process exits mid-candidate
    summary = run_search(Experiment.from_dict(exp_dict), tmp_path / "run", suite_factory=sh.suite_factory,
                         progress=False, report=False)
    trials = optuna.load_study(study_name=study_name(tmp_path / 'run'), storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").get_trials()
    died = [t for t in trials if t.state.name == "FAIL"]
    assert summary.finished == 6 and died and summary.failed == len(died)
    assert all("worker died (exit code 3)" in t.user_attrs["result"]["failure"] for t in died)
    assert any(t.state.name == "COMPLETE" for t in trials)  # replaced workers went on scoring
    assert {t.user_attrs["result"]["worker"] for t in trials} <= {"worker-0", "worker-1"}
