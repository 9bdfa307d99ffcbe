"""The search loop end to end on the tiny family, with fast deterministic weight-space objectives."""

import csv
import json

import optuna
import pytest

from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.pareto import dominates
from evomerge.search.storage import study_name

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def run(family, tmp_path, name="run", **overrides):
    exp = Experiment.from_dict(sh.experiment_dict(family, tmp_path, **overrides))
    return exp, run_search(exp, tmp_path / name, suite_factory=sh.suite_factory, progress=False, report=False)


def trials(run_dir):
    study = optuna.load_study(study_name=study_name(run_dir), storage=f"sqlite:///{run_dir / 'study.db'}")
    return study.get_trials()


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def check_front(summary, run_dir):
    done = [t for t in trials(run_dir) if t.state.name == "COMPLETE"]
    values = {t.number: t.values for t in done}
    assert summary.front and summary.hypervolume > 0
    for n in summary.front:  # members are not dominated by any scored candidate
        assert not any(dominates(v, values[n]) for v in values.values())
    hv = [float(r["hypervolume"]) for r in rows(run_dir / "hypervolume.csv")]
    assert len(hv) == summary.finished and hv == sorted(hv)  # tracked after every evaluation, never drops
    front = json.loads((run_dir / "front.json").read_text())
    assert [m["trial"] for m in front["members"]] == summary.front
    member = front["members"][0]
    assert set(member["search"]) == {"coding", "tool_use", "memory"} and member["recipe"]["method"] == "task_arithmetic"
    assert member["heldout"] is not None and "stderr" in member["heldout"]["coding"]


@pytest.mark.parametrize("optimizer", [{"name": "nsga2", "population": 6}, {"name": "cmaes", "population": 4}])
def test_optimizer_finds_a_front(tiny_family, tmp_path, optimizer):
    exp, summary = run(tiny_family, tmp_path, optimizer=optimizer, budget=16)
    run_dir = tmp_path / "run"
    assert summary.finished == 16 and summary.failed == 0
    check_front(summary, run_dir)
    assert len(rows(run_dir / "trials.csv")) == 16
    refs = json.loads((run_dir / "references.json").read_text())
    assert set(refs) == {"base", "coding", "tool_use", "memory"}
    assert refs["base"]["search_values"] == [0.0, 0.0, 0.0]  # the base carries no task vector
    heldout = json.loads((run_dir / "heldout.json").read_text())
    assert set(heldout["trials"]) == {str(n) for n in summary.front}
    # the search beat the base on every objective with at least one candidate
    assert any(all(v > 0 for v in t.values) for t in trials(run_dir) if t.values)


def test_failing_candidates_are_recorded_and_the_run_goes_on(tiny_family, tmp_path):
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=12, references=False)
    exp_dict["objectives"]["memory"]["options"]["fail_mod"] = 3
    exp = Experiment.from_dict(exp_dict)
    summary = run_search(exp, tmp_path / "run", suite_factory=sh.suite_factory, progress=False, report=False)
    failed = [t for t in trials(tmp_path / "run") if t.state.name == "FAIL"]
    assert summary.finished == 12 and summary.failed == len(failed) > 0
    assert all("deliberate failure" in t.user_attrs["result"]["failure"] for t in failed)
    table = rows(tmp_path / "run" / "trials.csv")
    assert sum(r["state"] == "FAIL" for r in table) == len(failed)
    assert all("deliberate failure" in r["failure"] for r in table if r["state"] == "FAIL")


def test_multi_fidelity_promotes_only_candidates_that_could_still_be_on_the_front(tiny_family, tmp_path):
    exp, summary = run(tiny_family, tmp_path, budget=14, fidelity={"rungs": [3, None], "z": 0.0})
    first, full = summary.evaluations_per_rung
    assert first == 14 and 0 < full < 14
    done = [t for t in trials(tmp_path / "run") if t.state.name == "COMPLETE"]
    low = [t for t in done if t.user_attrs["result"]["fidelity"] == 0]
    assert low and all(set(t.user_attrs["rungs"]) == {"0"} for t in low)
    assert all(next(t for t in done if t.number == n).user_attrs["result"]["fidelity"] == 1 for n in summary.front)


def test_constraints_keep_infeasible_candidates_off_the_front(tiny_family, tmp_path):
    exp, summary = run(tiny_family, tmp_path, budget=12, constraints={"max_drop": 0.6, "relative_to": "specialist"})
    refs = json.loads((tmp_path / "run" / "references.json").read_text())
    floor = [refs[name]["search_values"][i] - 0.6 for i, name in enumerate(("coding", "tool_use", "memory"))]
    done = [t for t in trials(tmp_path / "run") if t.state.name == "COMPLETE"]
    infeasible = {t.number for t in done if not t.user_attrs["result"]["feasible"]}
    for t in done:  # feasible: no objective more than 0.6 below the specialist for it
        values = t.user_attrs["result"]["objectives"]
        assert t.user_attrs["result"]["feasible"] == all(v >= f for v, f in zip(values, floor))
        assert t.constraints  # the sampler saw them too
    assert infeasible and summary.front and not infeasible & set(summary.front)


def test_the_evaluation_cache_makes_a_repeated_run_free(tiny_family, tmp_path):
    cache = {"enabled": True, "dir": str(tmp_path / "cache")}
    _, first = run(tiny_family, tmp_path, name="a", budget=8, cache=cache, heldout={"enabled": False})
    _, second = run(tiny_family, tmp_path, name="b", budget=8, cache=cache, heldout={"enabled": False})
    assert first.cache_hits == 0 and second.cache_hits == (8 + 4) * 3  # candidates + references, per suite
    a, b = trials(tmp_path / "a"), trials(tmp_path / "b")
    assert [t.values for t in a] == [t.values for t in b]


def test_synchronous_mode_is_reproducible(tiny_family, tmp_path):
    runs = []
    for name in ("x", "y"):
        run(tiny_family, tmp_path, name=name, budget=12, workers={"kind": "inline", "mode": "sync"},
            heldout={"enabled": False}, references=False)
        runs.append([(t.number, t.params, t.values) for t in trials(tmp_path / name)])
    assert runs[0] == runs[1]


def test_objective_weights_and_cost(tiny_family, tmp_path):
    """A cost objective (minimised) joins the front; CMA-ES scalarises with the experiment's weights."""
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=8, optimizer={"name": "cmaes", "population": 4},
                                  cost={"metric": "seconds"}, heldout={"enabled": False})
    exp_dict["objectives"]["coding"]["weight"] = 3.0
    exp = Experiment.from_dict(exp_dict)
    assert exp.objective_names == ["coding", "tool_use", "memory", "cost"] and exp.signs()[-1] == -1
    assert exp.weights() == [3.0, 1.0, 1.0, 1.0]
    summary = run_search(exp, tmp_path / "run", suite_factory=sh.suite_factory, progress=False, report=False)
    front = json.loads((tmp_path / "run" / "front.json").read_text())
    assert front["directions"][-1] == "minimize" and "cost" in front["members"][0]["search"]
    assert summary.finished == 8


def test_workers_placement_and_workspace_give_the_same_search(tiny_family, tmp_path, monkeypatch):
    """workers.placement / workspace_mib reach each worker's ResidentMerger and change no result: memory-mapped
    (node-shared) and compact inputs, whole tensors or row blocks, score every candidate as private copies do."""
    import evomerge.resident
    from evomerge.resident import DEFAULT_WORKSPACE_BYTES
    from evomerge.scoring.settings import Workers

    built = []

    class Recorded(evomerge.resident.ResidentMerger):
        def __init__(self, *args, **kwargs):
            built.append((kwargs["placement"], kwargs["workspace_bytes"]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evomerge.resident, "ResidentMerger", Recorded)

    assert Workers().workspace_mib == DEFAULT_WORKSPACE_BYTES == "auto"  # the experiment's default is the merger's
    runs = {}
    for placement, workspace in [("device", 512), ("host_mapped", 1), ("compact", None), ("device", "auto")]:
        name = f"{placement}-{workspace}"
        exp, _ = run(tiny_family, tmp_path, name=name, budget=8, heldout={"enabled": False}, references=False,
                     workers={"kind": "inline", "mode": "sync", "placement": placement, "workspace_mib": workspace})
        assert exp.workers.placement == placement
        runs[name] = [(t.number, t.params, t.values) for t in trials(tmp_path / name)]
    # a search resolves auto in its plan: 32 MiB blocks on this CPU
    assert built == [("device", 512 * 2**20), ("host_mapped", 2**20), ("compact", None), ("device", 32 * 2**20)]
    first = next(iter(runs.values()))
    assert len(first) == 8 and all(r == first for r in runs.values())
