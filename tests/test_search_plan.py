"""`evomerge search` plans its workers' memory before the run directory exists, runs the workers with what the
plan chose (placement, workspace bound) and records the plan in RUN_DIR/plan.json; a plan that cannot fit
stops the search before anything is written."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

import evomerge.resident
import evomerge.scoring.session
import evomerge.worker_plan
from evomerge.cli import main
from evomerge.memory_plan import PlanError
from evomerge.scoring.pools import InlinePool
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def recorded(monkeypatch):
    """What each worker received: the WorkerSetup the pool was opened with and the ResidentMerger's settings.
    Every pool runs inline in this process (the plan still counts the experiment's workers on this node)."""
    seen = {"setups": [], "mergers": []}

    def inline_pool(kind, setup, count=1, devices=None, *args, **kwargs):
        seen["setups"].append(setup)
        return InlinePool(setup, "cpu")

    class Recorded(evomerge.resident.ResidentMerger):
        def __init__(self, *args, **kwargs):
            seen["mergers"].append((kwargs["placement"], kwargs["workspace_bytes"]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evomerge.scoring.session, "build_pool", inline_pool)
    monkeypatch.setattr(evomerge.resident, "ResidentMerger", Recorded)
    return seen


def search(family, tmp_path, name="run", **overrides):
    exp = Experiment.from_dict(sh.experiment_dict(family, tmp_path, budget=4, references=False,
                                                  heldout={"enabled": False}, **overrides))
    return run_search(exp, tmp_path / name, suite_factory=sh.suite_factory, progress=False, report=False)


def test_plan_json_records_what_the_workers_run_with(tiny_family, tmp_path, recorded, caplog):
    with caplog.at_level(logging.INFO, logger="evomerge.search.loop"):
        summary = search(tiny_family, tmp_path)
    assert summary.finished == 4
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    worker = plan["nodes"][0]["workers"][0]
    assert plan["fits"] and worker["device"] == "cpu"
    # placement auto on a CPU with room: private copies, as before the plan existed; workspace auto: 32 MiB blocks
    assert (worker["placement"], worker["workspace_bound"]) == ("device", 32 * 2**20)
    assert recorded["mergers"] == [("device", 32 * 2**20)]
    setup = recorded["setups"][0]
    assert (setup.placement, setup.workspace_bytes) == (worker["placement"], worker["workspace_bound"])
    assert plan["nodes"][0]["host_memory"] == evomerge.worker_plan.host_memory_total()  # this machine's MemTotal
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory plan")]
    assert len(lines) == 1 and "placement device" in lines[0] and "fits" in lines[0]
    # the experiment keeps `auto` (a resumed run re-plans on its machine)
    assert yaml.safe_load((tmp_path / "run" / "experiment.yaml").read_text())["workers"]["placement"] == "auto"


def test_auto_maps_the_inputs_when_private_copies_do_not_fit_and_resume_replans(tiny_family, tmp_path, recorded,
                                                                                 monkeypatch):
    workers = {"kind": "local", "count": 2, "threads": 1, "workspace_mib": 1}
    search(tiny_family, tmp_path, name="roomy", workers=workers)
    plan = json.loads((tmp_path / "roomy" / "plan.json").read_text())
    worker, node = plan["nodes"][0]["workers"][0], plan["nodes"][0]
    inputs = next(c["bytes"] for c in worker["components"] if c["name"] == "inputs")
    assert worker["placement"] == "device" and len(node["workers"]) == 2
    # host memory for two workers sharing one mapped copy of the inputs, not for two private copies
    tight = 2 * worker["host_peak"] - inputs
    monkeypatch.setattr(evomerge.worker_plan, "host_memory_total", lambda: tight)
    search(tiny_family, tmp_path, name="tight", workers=workers)
    plan = json.loads((tmp_path / "tight" / "plan.json").read_text())
    assert plan["nodes"][0]["workers"][0]["placement"] == "host_mapped"
    assert plan["nodes"][0]["host_peak"] <= tight and plan["nodes"][0]["host_shared"] == inputs
    assert recorded["mergers"][-1] == ("host_mapped", 2**20) and recorded["setups"][-1].placement == "host_mapped"
    # resumed on a machine with more memory: planned again, plan.json rewritten, the workers follow it
    monkeypatch.setattr(evomerge.worker_plan, "host_memory_total", lambda: 64 * 2**30)
    exp = Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, budget=6, references=False,
                                                  heldout={"enabled": False}, workers=workers))
    run_search(exp, tmp_path / "tight", resume=True, suite_factory=sh.suite_factory, progress=False, report=False)
    plan = json.loads((tmp_path / "tight" / "plan.json").read_text())
    assert plan["nodes"][0]["workers"][0]["placement"] == "device" and plan["nodes"][0]["host_memory"] == 64 * 2**30
    assert recorded["mergers"][-1] == ("device", 2**20)


def test_an_explicit_placement_is_kept(tiny_family, tmp_path, recorded):
    search(tiny_family, tmp_path, workers={"kind": "inline", "threads": 1, "placement": "host_mapped"})
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["nodes"][0]["workers"][0]["placement"] == \
        "host_mapped"
    assert recorded["mergers"] == [("host_mapped", 32 * 2**20)]


def test_a_plan_that_cannot_fit_stops_before_the_run_directory(tiny_family, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evomerge.worker_plan, "host_memory_total", lambda: 100 * 2**20)  # less than the runtime
    with pytest.raises(PlanError, match="memory plan: 1 worker"):
        search(tiny_family, tmp_path)
    assert not (tmp_path / "run").exists()
    # the command line: exit 1, one line saying what to change, no run directory
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(tiny_family["base"]), "models": {a: str(tiny_family[a]) for a in ("coding", "tool_use")},
        "search_space": sh.TA_WEIGHTS, "objectives": {"coding": {"data": "toy"}}, "budget": 2,
        "workers": {"kind": "inline"}, "cache": {"enabled": False}}))
    capsys.readouterr()
    assert main(["search", str(exp), "--out", str(tmp_path / "cli"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: memory plan: 1 worker(s) need") and "100.00 MiB" in err[0]
    assert "not even one worker fits: use a node with more memory" in err[0]
    assert not (tmp_path / "cli").exists()


def test_vllm_settings_the_plan_chose_reach_gpu_workers_unless_the_user_set_them(tmp_path):
    """configure_workers on a GPU plan (7B headers, one 80 GB GPU): the engine settings the plan sized go to
    the workers' generator options; the user's own values are kept; a CPU plan adds none."""
    from evomerge.fixture import FixtureSpec, paper_agents, write_fixture
    from evomerge.memory_plan import PlanRequest, build_plan
    from evomerge.scoring.workers import WorkerSetup
    from evomerge.worker_plan import configure_workers

    write_fixture(FixtureSpec("7b", paper_agents(3), headers_only=True, with_tokenizer=False), tmp_path)
    paths = dict(base=str(tmp_path / "base"), models=tuple(str(tmp_path / a) for a in ("coding", "tool_use", "memory")))
    user = {"max_num_seqs": 8, "max_model_len": 32768}
    plan = build_plan(PlanRequest(**paths, methods=("ram_plus",), backend="vllm", engine_options=user, gpus=1,
                                  row_blockable={"ram_plus": True}))
    setup = WorkerSetup(base=paths["base"], models=list(paths["models"]), suites={},
                        generator={"backend": "vllm", "dtype": None, "options": dict(user)})
    got = configure_workers(setup, plan)
    engine = plan.nodes[0].workers[0].engine
    assert engine["max_num_seqs"] == 8  # sized with the user's value
    assert got.generator["options"] == {**user, "gpu_memory_utilization": engine["gpu_memory_utilization"],
                                        "enforce_eager": False}
    assert (got.placement, got.workspace_bytes) == (plan.placement, 512 * 2**20)
    assert setup.generator["options"] == user  # the experiment's settings (the cache key) are not touched
    cpu = build_plan(PlanRequest(**paths, methods=("ram_plus",), backend="vllm", engine_options=user, gpus=0))
    assert configure_workers(setup, cpu).generator["options"] == user
