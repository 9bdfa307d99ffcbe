"""The Ray pool (a local 2-CPU cluster): the same trials as the local pool in synchronous mode; dead actors replaced."""

import os
from pathlib import Path

import optuna
import pytest

from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import study_name

import search_helpers as sh

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    here = Path(__file__).parent
    # actors import the test objectives (search_helpers) and evomerge from this checkout
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def trials(run_dir):
    return optuna.load_study(study_name=study_name(run_dir), storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()


def test_ray_pool_gives_the_same_trials_as_the_local_pool_in_sync_mode(ray_cluster, tiny_family, tmp_path):
    common = dict(budget=8, optimizer={"name": "nsga2", "population": 4}, heldout={"enabled": False})
    runs = {}
    for name, workers in (("inline", {"kind": "inline", "mode": "sync", "threads": 1}),
                          ("ray", {"kind": "ray", "count": 2, "mode": "sync", "threads": 1})):
        exp = Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, workers=workers, **common))
        summary = run_search(exp, tmp_path / name, suite_factory=sh.suite_factory, progress=False, report=False)
        assert summary.finished == 8 and summary.failed == 0
        runs[name] = [(t.number, t.params, t.values) for t in trials(tmp_path / name)]
    assert runs["ray"] == runs["inline"]
    workers = {t.user_attrs["result"]["worker"] for t in trials(tmp_path / "ray")}
    assert workers == {"ray-worker-0", "ray-worker-1"}  # both actors scored candidates


@pytest.mark.slow  # a replacement actor imports torch and transformers again
def test_a_dead_ray_actor_fails_its_candidate_and_is_replaced(ray_cluster, tiny_family, tmp_path):
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=6, references=False, heldout={"enabled": False},
                                  workers={"kind": "ray", "count": 2, "threads": 1})
    exp_dict["objectives"]["coding"]["options"]["exit_mod"] = 3
    summary = run_search(Experiment.from_dict(exp_dict), tmp_path / "run", suite_factory=sh.suite_factory,
                         progress=False, report=False)
    died = [t for t in trials(tmp_path / "run") if t.state.name == "FAIL"]
    assert summary.finished == 6 and died and summary.failed == len(died)
    assert all(t.user_attrs["result"]["failure"].startswith("worker died") for t in died)
    assert any(t.state.name == "COMPLETE" for t in trials(tmp_path / "run"))
