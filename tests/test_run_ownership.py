"""A run owns its study and its directory: one study per run in a shared storage, one process per run
directory, every input checked before the directory is created, a clear error for an unguarded script."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from evomerge.errors import ExperimentError
from evomerge.report.reading import load_run
from evomerge.rundir import LOCK_FILE
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import RUN_JSON, STUDY_NAME, study_name

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def search(family, tmp_path, run, resume=False, suite_factory=sh.suite_factory, **overrides):
    exp = Experiment.from_dict(sh.experiment_dict(family, tmp_path, **overrides))
    return run_search(exp, tmp_path / run, resume=resume, suite_factory=suite_factory, progress=False, report=False)


def test_two_runs_sharing_one_storage_url_each_own_their_study(tiny_family, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = search(tiny_family, tmp_path, "a", storage=url, budget=4, name="alpha")
    second = search(tiny_family, tmp_path, "b", storage=url, budget=5, name="beta")
    assert (first.finished, second.finished) == (4, 5)  # the second ran its own trials, none of the first's
    names = {study_name(tmp_path / "a"), study_name(tmp_path / "b")}
    assert len(names) == 2 and all(n.startswith(("alpha-", "beta-")) for n in names)
    assert sorted(optuna.study.get_all_study_names(url)) == sorted(names)
    assert json.loads((tmp_path / "a" / RUN_JSON).read_text()) == {"study": study_name(tmp_path / "a")}
    study = optuna.load_study(study_name=study_name(tmp_path / "a"), storage=url)
    assert study.metric_names == ["coding", "tool_use", "memory"]  # optuna-dashboard names the objectives
    assert len(load_run(tmp_path / "a").trials) == 4 and len(load_run(tmp_path / "b").trials) == 5  # the report too
    resumed = search(tiny_family, tmp_path, "a", resume=True, storage=url, budget=6, name="alpha")
    assert resumed.finished == 6 and len(load_run(tmp_path / "b").trials) == 5


def test_the_cost_objective_is_named_last_and_negated(tiny_family, tmp_path):
    search(tiny_family, tmp_path, "run", budget=2, cost={"metric": "seconds"}, reference_point=[0, 0, 0, -100])
    study = optuna.load_study(study_name=study_name(tmp_path / "run"), storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study.metric_names == ["coding", "tool_use", "memory", "cost (negated)"]


def test_a_run_created_before_runs_owned_their_study_resumes_under_the_old_name(tiny_family, tmp_path):
    run_dir = tmp_path / "run"
    search(tiny_family, tmp_path, "run", budget=3)
    url = f"sqlite:///{run_dir / 'study.db'}"
    # make it an old run: its study is called "evomerge" and run.json does not exist
    optuna.copy_study(from_study_name=study_name(run_dir), from_storage=url, to_storage=url, to_study_name=STUDY_NAME)
    optuna.delete_study(study_name=study_name(run_dir), storage=url)
    (run_dir / RUN_JSON).unlink()
    assert study_name(run_dir) == STUDY_NAME
    summary = search(tiny_family, tmp_path, "run", resume=True, budget=5)
    assert summary.finished == 5 and optuna.study.get_all_study_names(url) == [STUDY_NAME]
    assert len(load_run(run_dir).trials) == 5


HOLD_LOCK = """
import sys, time
from evomerge.rundir import RunDir
lock = RunDir(sys.argv[1]).lock()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_a_running_run_is_refused_naming_the_holder(tiny_family, tmp_path):
    search(tiny_family, tmp_path, "run", budget=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(ExperimentError, match=rf"another evomerge process \(pid {holder.pid}\) is running this run"):
            search(tiny_family, tmp_path, "run", resume=True, budget=4)
        with pytest.raises(ExperimentError, match=rf"pid {holder.pid}"):  # a fresh run into the same directory too
            search(tiny_family, tmp_path, "run", budget=4)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with the process (kill -9 leaves only the file): resuming now works
    assert search(tiny_family, tmp_path, "run", resume=True, budget=4).finished == 4
    assert (tmp_path / "run" / LOCK_FILE).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("broken", ["suite", "optimizer", "warm_start"])
def test_nothing_is_created_before_every_input_is_checked(tiny_family, tmp_path, broken):
    good = sh.experiment_dict(tiny_family, tmp_path, budget=2)
    bad = json.loads(json.dumps(good))
    if broken == "suite":  # the default factory: the registry knows no such suite
        bad["objectives"]["coding"]["kind"] = "no_such_suite"
        factory, error = None, ExperimentError
    elif broken == "optimizer":
        bad["optimizer"]["settings"] = {"no_such_setting": 1}
        factory, error = sh.suite_factory, ExperimentError
    else:
        bad["warm_start"] = {"from_runs": [str(tmp_path / "no_such_run")]}
        factory, error = sh.suite_factory, ExperimentError
    with pytest.raises(error, match={"suite": r"objectives.coding: unknown suite 'no_such_suite'",
                                     "optimizer": "no_such_setting", "warm_start": "no_such_run"}[broken]):
        run_search(Experiment.from_dict(bad), tmp_path / "run", suite_factory=factory, progress=False, report=False)
    assert not (tmp_path / "run").exists()
    summary = run_search(Experiment.from_dict(good), tmp_path / "run", suite_factory=sh.suite_factory, progress=False,
                         report=False)
    assert summary.finished == 2


def test_resuming_a_missing_run_creates_nothing(tiny_family, tmp_path):
    with pytest.raises(ExperimentError, match="no run to resume here"):
        search(tiny_family, tmp_path, "run", resume=True)
    assert not (tmp_path / "run").exists()


UNGUARDED = """
import json, sys
sys.path.insert(0, {tests!r})
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
import search_helpers as sh
exp = Experiment.from_dict(json.load(open({exp!r})))
run_search(exp, {run!r}, suite_factory=sh.suite_factory, progress=False, report=False)
"""


def test_a_script_without_a_main_guard_gets_a_clear_error_before_anything_starts(tiny_family, tmp_path):
    exp = sh.experiment_dict(tiny_family, tmp_path, budget=2, workers={"kind": "local", "count": 1, "threads": 1})
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.format(tests=str(Path(__file__).parent), exp=str(tmp_path / "exp.json"),
                                       run=str(tmp_path / "run")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "MainGuardError" in done.stderr and 'if __name__ == "__main__":' in done.stderr
    assert not (tmp_path / "run").exists() and time.monotonic() - t0 < 120
