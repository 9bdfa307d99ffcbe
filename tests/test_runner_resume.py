"""`--resume` after kill -9: a search process is killed mid-run and continued; nothing finished is lost or repeated."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import study_name
import search_helpers as sh
exp = Experiment.from_dict(json.load(open({exp!r})))
run_search(exp, {run!r}, suite_factory=sh.suite_factory, progress=False, report=False)
"""


def finished_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def study_trials(run_dir: Path):
    return optuna.load_study(study_name=study_name(run_dir), storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()


@pytest.mark.parametrize("optimizer,fidelity", [
    ({"name": "nsga2", "population": 4}, {"rungs": [None]}),
    # CMA-ES replays its generations from the storage; a trial killed between rungs keeps its first rung
    pytest.param({"name": "cmaes", "population": 4}, {"rungs": [4, None], "z": 0.0}, marks=pytest.mark.slow),
])
def test_resume_after_sigkill_keeps_every_finished_trial_and_honours_the_budget(tiny_family, tmp_path, optimizer,
                                                                                fidelity):
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=12, optimizer=optimizer, fidelity=fidelity,
                                  heldout={"enabled": False})
    for obj in exp_dict["objectives"].values():
        obj["options"]["sleep"] = 0.05  # slow enough to be killed mid-candidate
    exp_file = tmp_path / "exp.json"
    exp_file.write_text(json.dumps(exp_dict))
    run_dir = tmp_path / "run"
    code = SCRIPT.format(tests=str(Path(__file__).parent), exp=str(exp_file), run=str(run_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while len(finished_rows(run_dir / "trials.csv")) < 4:
            assert proc.poll() is None, f"the search ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, 9)
        proc.wait()
    before = {t.number: (t.state.name, t.params, t.values) for t in study_trials(run_dir) if t.state.is_finished()}
    assert 4 <= len(before) < 12  # killed mid-run

    exp = Experiment.from_dict(exp_dict)
    summary = run_search(exp, run_dir, resume=True, suite_factory=sh.suite_factory, progress=False, report=False)

    after = [t for t in study_trials(run_dir) if not t.user_attrs.get("discarded")]
    assert summary.finished == 12 and len(after) == 12 and all(t.state.is_finished() for t in after)
    by_number = {t.number: (t.state.name, t.params, t.values) for t in after}
    assert all(by_number[n] == v for n, v in before.items())  # nothing finished was lost or redone
    rows = finished_rows(run_dir / "trials.csv")
    assert sorted(int(r["trial"]) for r in rows) == sorted(by_number)  # one row per trial, none twice
    assert len(finished_rows(run_dir / "hypervolume.csv")) == 12
    with pytest.raises(Exception, match="already lives here"):
        run_search(exp, run_dir, suite_factory=sh.suite_factory, progress=False, report=False)


def test_resume_refuses_a_space_file_edited_since_the_run_started(tiny_family, tmp_path):
    """The experiment names its space by path, so the experiment itself is unchanged; the genes are not."""
    import yaml

    from evomerge.errors import ExperimentError

    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(sh.TA_WEIGHTS))
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=4, search_space=str(space_file),
                                  heldout={"enabled": False})
    run_dir = tmp_path / "run"
    run_search(Experiment.from_dict(exp_dict), run_dir, suite_factory=sh.suite_factory, progress=False, report=False)

    edited = dict(sh.TA_WEIGHTS, methods={"task_arithmetic": {"weight": {"low": 0.0, "high": 1.0, "per_model": True},
                                                              "lambda": {"low": 0.5, "high": 1.5}}})
    space_file.write_text(yaml.safe_dump(edited))
    more = Experiment.from_dict(dict(exp_dict, budget=6))
    with pytest.raises(ExperimentError, match=r"cannot resume: trial 0 has other genes.*'g0.task_arithmetic.lambda'"):
        run_search(more, run_dir, resume=True, suite_factory=sh.suite_factory, progress=False, report=False)
    assert len([t for t in study_trials(run_dir) if t.state.is_finished()]) == 4  # nothing was added

    space_file.write_text(yaml.safe_dump(sh.TA_WEIGHTS))  # restored: the run goes on
    summary = run_search(more, run_dir, resume=True, suite_factory=sh.suite_factory, progress=False, report=False)
    assert summary.finished == 6
