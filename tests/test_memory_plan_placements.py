"""The plan's placements (device | host_mapped | compact, auto) and its workspace bound, as ResidentMerger
now runs them: mapped inputs are the node's page cache, counted once per node; the workspace is bounded by
workspace_bytes only when every rule the experiment can produce is row-blockable, as the method registry
says; refusals say what to change. Checkpoints are headers-only fixtures (the plan reads headers only)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from evomerge.cli import main
from evomerge.fixture import FixtureSpec, paper_agents, write_fixture
from evomerge.memory_plan import (
    ModelFacts, PlanRequest, build_plan, compact_agent_bytes, merge_temporaries_bytes,
    node_host_bytes, workspace_bytes, workspace_numel,
)
from evomerge.methods.registry import METHODS
from evomerge.plan_rules import space_row_blockable, sweep_row_blockable
from evomerge.search.space_spec import SearchSpaceSpec

AGENTS = ("coding", "tool_use", "memory")
MIB = 2**20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_fixture(FixtureSpec("tiny", paper_agents(3), headers_only=True, with_tokenizer=False), d)
    return d


def request(d: Path, **kw) -> PlanRequest:
    kw.setdefault("methods", ("task_arithmetic",))
    return PlanRequest(base=str(d / "base"), models=tuple(str(d / a) for a in AGENTS), **kw)


def comps(worker):
    return {c.name: c for c in worker.components}


def test_workspace_arithmetic_by_hand():
    # 0.5B embedding, 3 agents: whole tensors = 4 float32 rows of 136,134,656 entries
    embed = 151936 * 896
    assert workspace_bytes(3, embed) == workspace_bytes(3, embed, 512 * MIB, blockable=False) == 16 * embed
    assert workspace_bytes(3, embed, None, blockable=True) == 16 * embed  # no bound: whole tensors
    # row blocks: 512 MiB / (4 operands x 4 bytes) = 33,554,432 entries per row of the workspace
    assert workspace_numel(3, embed, 512 * MIB, blockable=True) == 33_554_432
    assert workspace_bytes(3, embed, 512 * MIB, blockable=True) == 512 * MIB
    assert workspace_bytes(3, 1000, 512 * MIB, blockable=True) == 16 * 1000  # a small model: its largest tensor
    # temporaries in blocks: (k - 1/2) float32 copies of a block + the whole merged tensor in bf16
    assert merge_temporaries_bytes(["ram_plus"], embed, 33_554_432) == 3.5 * 33_554_432 * 4 + 2 * embed
    assert merge_temporaries_bytes(["ram_plus"], embed, embed) == merge_temporaries_bytes(["ram_plus"], embed)
    # compact: bitmask + prefix counts + the changed bf16 values
    assert compact_agent_bytes(4096 * 10, 1, 2, 0.5) == (5120 + 1) + 8 * (10 + 2) + 20480 * 2
    assert node_host_bytes(100, 7, 8) == 156


def test_mapped_inputs_are_counted_once_per_node(tiny):
    facts = ModelFacts.from_checkpoint(tiny / "base")
    inputs = 4 * facts.stored_bytes
    mapped = build_plan(request(tiny, cpu_workers=3, placement="host_mapped"))
    private = build_plan(request(tiny, cpu_workers=3, placement="device"))
    wm, wp = mapped.nodes[0].workers[0], private.nodes[0].workers[0]
    assert comps(wm)["inputs (mapped files)"].bytes == inputs and comps(wm)["inputs (mapped files)"].shared
    assert comps(wp)["inputs"].bytes == inputs and not comps(wp)["inputs"].shared
    # the same worker otherwise: only where the inputs are counted differs
    assert wm.total("host") == wp.total("host") and wm.total("host", shared=False) == wp.total("host") - inputs
    assert mapped.nodes[0].host_shared == inputs and private.nodes[0].host_shared == 0
    assert mapped.nodes[0].host_peak == inputs + 3 * wm.total("host", shared=False)
    assert private.nodes[0].host_peak == 3 * wp.total("host")
    assert private.nodes[0].host_peak - mapped.nodes[0].host_peak == 2 * inputs
    data = mapped.to_dict()
    assert data["nodes"][0]["host_shared"] == inputs and data["nodes"][0]["workers"][0]["inputs_where"] == \
        "node page cache (shared)"


def test_auto_takes_private_copies_when_they_fit_else_the_shared_mapping(tiny):
    facts = ModelFacts.from_checkpoint(tiny / "base")
    roomy = build_plan(request(tiny, cpu_workers=2, host_memory=64 * 2**30))
    assert roomy.fits and roomy.placement == "device"  # unchanged behaviour where everything fits
    one = roomy.nodes[0].workers[0].total("host")
    # room for two workers sharing the inputs, not for two private copies
    tight = 2 * one - 4 * facts.stored_bytes
    plan = build_plan(request(tiny, cpu_workers=2, host_memory=tight))
    assert plan.fits and plan.placement == "host_mapped" and plan.nodes[0].host_peak <= tight
    refused = build_plan(request(tiny, cpu_workers=2, host_memory=tight, placement="device"))
    assert not refused.fits and "use 1 worker(s) or fewer, placement host_mapped" in refused.refusal


def test_workspace_bound_follows_row_blockable(tiny):
    facts = ModelFacts.from_checkpoint(tiny / "base")
    n = 3
    bound = 64 * 1024  # smaller than the tiny preset's largest tensor (65,536 entries x 4 operands x 4 bytes)
    blockable = build_plan(request(tiny, methods=("task_arithmetic", "ram_plus"), workspace_bytes=bound,
                                   row_blockable={"task_arithmetic": True, "ram_plus": True}))
    assert comps(blockable.nodes[0].workers[0])["workspace"].bytes == bound == workspace_bytes(n, facts.max_float_numel,
                                                                                                 bound, True)
    assert blockable.whole_tensor_methods == ()
    mixed = build_plan(request(tiny, methods=("task_arithmetic", "ties"), workspace_bytes=bound,
                               row_blockable={"task_arithmetic": True, "ties": False}))
    assert comps(mixed.nodes[0].workers[0])["workspace"].bytes == (n + 1) * facts.max_float_numel * 4
    assert mixed.whole_tensor_methods == ("ties",)
    # a method the registry was not asked about counts as whole-tensor (the safe bound)
    unknown = build_plan(request(tiny, methods=("task_arithmetic",), workspace_bytes=bound))
    assert comps(unknown.nodes[0].workers[0])["workspace"].bytes == (n + 1) * facts.max_float_numel * 4


def test_row_blockability_is_asked_of_the_method_registry(monkeypatch):
    space = SearchSpaceSpec.model_validate({"name": "s", "methods": {
        "task_arithmetic": {"weight": {"low": 0.1, "high": 1.0}},
        "ram_plus": {"epsilon": {"low": 1e-7, "high": 1e-3, "scale": "log"}},
        "ties": {"density": {"low": 0.1, "high": 1.0}},
        "breadcrumbs": {"density": {"low": 0.1, "high": 1.0}, "rescale": {"value": True}},
        "dare_ties": {"density": {"value": 1.0}, "rescale_mode": {"value": "l1"}},
        "slerp": {}}})
    got = space_row_blockable(space, 2)
    # TIES' magnitude ranks are gathered over the blocks; an L1 rescale below density 1 is a float sum over the
    # whole tensor (not blockable), at density 1 nothing is pruned or rescaled; SLERP needs whole-tensor norms
    assert got == {"task_arithmetic": True, "ram_plus": True, "ties": True, "breadcrumbs": False, "dare_ties": True,
                   "slerp": False}
    # a method that learns row blocks changes the plan without an edit to the plan
    monkeypatch.setitem(METHODS, "slerp", dataclasses.replace(METHODS["slerp"], row_blockable=lambda params: True))
    assert space_row_blockable(space, 2)["slerp"] is True


def test_sweep_grid_points_are_asked_one_by_one():
    from evomerge.sweep.experiment import SweepMethod

    entries = [SweepMethod(method="ties", grid={"density": [1.0]}),
               SweepMethod(method="dare_ties", parameters={"rescale_mode": "l1"}, grid={"density": [0.5, 1.0]}),
               SweepMethod(method="task_arithmetic")]
    assert sweep_row_blockable(entries, 3) == {"ties": True, "dare_ties": False, "task_arithmetic": True}


def test_compact_uses_given_densities_and_says_when_they_are_unknown(tiny):
    facts = ModelFacts.from_checkpoint(tiny / "base")
    dens = (0.032, 0.462, 0.543)
    plan = build_plan(request(tiny, placement="compact", densities=dens))
    w = plan.nodes[0].workers[0]
    expected = facts.stored_bytes + sum(compact_agent_bytes(facts.parameters, facts.tensors, 2, d) for d in dens)
    assert comps(w)["inputs (compact)"].bytes == expected < 4 * facts.stored_bytes
    assert not any("unknown" in n for n in w.notes)
    unknown = build_plan(request(tiny, placement="compact")).nodes[0].workers[0]
    assert any("densities unknown" in n for n in unknown.notes)  # never the paper's densities, silently
    assert comps(unknown)["inputs (compact)"].bytes == facts.stored_bytes + 3 * compact_agent_bytes(
        facts.parameters, facts.tensors, 2, 1.0)
    # auto never picks compact by itself
    assert build_plan(request(tiny, densities=dens)).placement == "device"


def test_cli_placement_workspace_and_densities(tiny, tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "base": str(tiny / "base"), "models": {a: str(tiny / a) for a in AGENTS},
        "search_space": {"name": "ta", "methods": {"task_arithmetic": {"weight": {"low": 0.1, "high": 1.0}}}},
        "objectives": {"coding": {"data": "toy"}}, "workers": {"count": 2, "workspace_mib": 1},
    }))
    out = tmp_path / "plan.json"
    assert main(["plan", str(exp), "--placement", "host_mapped", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    w = data["nodes"][0]["workers"][0]
    assert w["placement"] == "host_mapped" and w["workspace_bound"] == MIB and data["whole_tensor_methods"] == []
    facts = ModelFacts.from_checkpoint(tiny / "base")
    assert next(c for c in w["components"] if c["name"] == "workspace")["bytes"] == workspace_bytes(
        3, facts.max_float_numel, MIB, True)
    assert main(["plan", str(exp), "--workspace-mib", "none", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["nodes"][0]["workers"][0]["workspace_bound"] is None
    capsys.readouterr()
    assert main(["plan", str(exp), "--placement", "compact", "--densities", "0.1,0.2"]) == 1
    assert "--densities: expected 3 value(s)" in capsys.readouterr().err
    assert main(["plan", str(exp), "--workspace-mib", "0"]) == 1
    assert main(["plan", str(exp), "--placement", "compact", "--densities", "0.1,0.2,0.3"]) == 0
    assert "placement compact" in capsys.readouterr().out



def test_auto_does_not_squeeze_the_engine_to_keep_private_copies_on_the_gpu(tmp_path):
    """3 x 7B with RAM+ only (row-blockable: a 512 MiB workspace): private copies on an 80 GB GPU would fit
    but leave vLLM 2 sequences of 32768 tokens; the mapped inputs leave it 32, so auto maps them."""
    write_fixture(FixtureSpec("7b", paper_agents(3), headers_only=True, with_tokenizer=False), tmp_path)
    req = dict(methods=("ram_plus",), backend="vllm", gpus=1, row_blockable={"ram_plus": True})
    device = build_plan(request(tmp_path, placement="device", **req))
    assert device.fits and device.nodes[0].workers[0].engine["max_num_seqs"] == 2
    auto = build_plan(request(tmp_path, **req))
    w = auto.nodes[0].workers[0]
    assert auto.fits and auto.placement == "host_mapped" and w.engine["max_num_seqs"] == 32
    assert w.notes[0] == "placement device would fit but leave the engine max_num_seqs=2 instead of 32"
    assert comps(w)["workspace"].bytes == 512 * MIB and comps(w)["workspace"].where == "gpu"
