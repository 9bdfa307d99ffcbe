"""`--resume` after kill -9: a search process is killed mid-run and continued; nothing finished is lost or repeated."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import study_name

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
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
    # the additive model is rebuilt from the study and its draws are seeded by trial number
    ({"name": "additive", "population": 4, "settings": {"n_startup_trials": 4}}, {"rungs": [None]}),
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


# kill -9 at a chosen point of a run: the hook lets the original step happen, then the process kills itself,
# so the storage and the run directory are exactly as a kill at that moment leaves them
KILLED_AT = """
import json, os, sys
sys.path.insert(0, {tests!r})
from evomerge.search.experiment import Experiment
from evomerge.search import loop, record
import search_helpers as sh
stage, nth = {stage!r}, {nth!r}
calls = [0]

def after(original, when=lambda *a: True):
    def hooked(*args, **kwargs):
        out = original(*args, **kwargs)
        if when(*args):
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), 9)
        return out
    return hooked

if stage == "references":  # one reference scored and written, the others not
    record.RunRecord.write_references = after(record.RunRecord.write_references)
elif stage == "within_rung":  # a trial's rung queued, its score not stored
    loop.SearchLoop._enqueue_rung = after(loop.SearchLoop._enqueue_rung)
elif stage == "between_rungs":  # rung 0 stored, rung 1 not started
    loop.SearchLoop._absorb = after(loop.SearchLoop._absorb, lambda self, live, outcome: outcome.ok and outcome.key.rung == 0)
elif stage == "heldout":  # one held-out score written, the others not
    record.RunRecord.write_heldout = after(record.RunRecord.write_heldout)
exp = Experiment.from_dict(json.load(open({exp!r})))
loop.run_search(exp, {run!r}, suite_factory=sh.suite_factory, progress=False, report=False)
print("not killed")
"""


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("stage,nth", [("references", 2), ("within_rung", 5), ("between_rungs", 3), ("heldout", 1)])
def test_resume_after_sigkill_at_every_stage_finishes_with_a_consistent_front(tiny_family, tmp_path, stage, nth, mode):
    from evomerge.report.reading import load_run
    from evomerge.search.pareto import pareto_front

    budget = 6
    # z large: every candidate climbs to the top rung, so a trial killed between rungs is promoted on resume
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=budget, optimizer={"name": "nsga2", "population": 3},
                                  fidelity={"rungs": [4, None], "z": 50.0},
                                  workers={"kind": "inline", "threads": 1, "mode": mode})
    exp_file = tmp_path / "exp.json"
    exp_file.write_text(json.dumps(exp_dict))
    run_dir = tmp_path / "run"
    code = KILLED_AT.format(tests=str(Path(__file__).parent), exp=str(exp_file), run=str(run_dir), stage=stage, nth=nth)
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr[-2000:]

    summary = run_search(Experiment.from_dict(exp_dict), run_dir, resume=True, suite_factory=sh.suite_factory,
                         progress=False, report=False)
    trials = [t for t in study_trials(run_dir) if not t.user_attrs.get("discarded")]
    assert summary.finished == budget and len(trials) == budget and all(t.state.name == "COMPLETE" for t in trials)
    assert all(t.user_attrs["result"]["fidelity"] == 1 for t in trials)
    values = {t.number: t.values for t in trials}
    expected_front = sorted(list(values)[i] for i in pareto_front([np.asarray(v) for v in values.values()]))
    assert summary.front == expected_front
    front = json.loads((run_dir / "front.json").read_text())
    assert [m["trial"] for m in front["members"]] == expected_front
    assert all(m["heldout"] is not None for m in front["members"])  # every member re-scored on the held-out split
    heldout = json.loads((run_dir / "heldout.json").read_text())
    assert sorted(map(int, heldout["trials"])) == sorted(set(map(int, heldout["trials"])) | set(expected_front)) \
        and set(heldout["references"]) == {"base", "coding", "tool_use", "memory"}
    assert set(json.loads((run_dir / "references.json").read_text())) == {"base", "coding", "tool_use", "memory"}
    assert sorted(int(r["trial"]) for r in finished_rows(run_dir / "trials.csv")) == sorted(values)
    assert len(finished_rows(run_dir / "hypervolume.csv")) == budget
    assert len(load_run(run_dir).trials) == budget
