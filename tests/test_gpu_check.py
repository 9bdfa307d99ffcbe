"""benchmarks/gpu_check.py's logic on a CPU at the tiny preset: every row of the table is there, CPU rows carry
real timings, every placement's merged tensors equal the disk path's, the GPU-only rows say why they were not
measured, the deadline cuts a step into a "not measured" row, and the JSON parses."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("ram_plus", "ties", "task_arithmetic")
PLACEMENTS = ("device", "host_mapped", "compact")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load()


@pytest.fixture(scope="module")
def run(gpu_check, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "gpu_check.json"
    gpu_check.main(["--preset", "tiny", "--device", "cpu", "--budget-s", "120", "--json", str(out),
                    "--work-dir", str(tmp / "work")])
    return json.loads(out.read_text())


def _rows(run, step, method="", placement=""):
    return [r for r in run["rows"] if r["step"] == step and r["method"] == method and r["placement"] == placement]


def _one(run, step, method="", placement=""):
    rows = _rows(run, step, method, placement)
    assert len(rows) == 1, (step, method, placement, rows)
    return rows[0]


def test_cpu_rows_are_measured_with_positive_times(run):
    gen = _one(run, "inputs: generate base + 3 agents")
    assert gen["status"] == "measured" and gen["seconds"] > 0
    assert gen["data"]["densities"] == [0.032, 0.462, 0.543]  # the paper's agents
    for method in METHODS:
        disk = _one(run, "merge: disk path (evomerge merge API)", method, "files")
        assert disk["status"] == "measured" and disk["seconds"] > 0
    for placement in PLACEMENTS:
        load = _one(run, "load: resident inputs", "", placement)
        assert load["status"] == "measured" and load["seconds"] > 0
        swap = _one(run, "merge + swap: hf backend", "ram_plus", placement)
        assert swap["status"] == "measured" and swap["seconds"] > 0
        # the goals are for 7B on a GPU: shown, never judged on a CPU
        assert swap["goal"] and swap["goal_met"] is None
        for method in METHODS:
            merge = _one(run, "merge: resident", method, placement)
            assert merge["status"] == "measured" and merge["seconds"] > 0 and merge["data"]["first_seconds"] > 0


def test_every_placement_equals_the_disk_path(run):
    assert len(run["meta"]["sample_tensors"]) == 6
    assert "model.embed_tokens.weight" in run["meta"]["sample_tensors"]
    for placement in PLACEMENTS:
        for method in METHODS:
            merge = _one(run, "merge: resident", method, placement)
            assert merge["check"] == "equal to the disk path bit for bit (6 sample tensors)"


def test_full_size_is_the_measured_size_at_the_tiny_preset(run):
    assert run["meta"]["inputs"]["extrapolation_factor"] == 1.0
    for row in _rows(run, "merge: resident", "ties", "device"):
        assert row["full_seconds"] == row["seconds"] and not row["extrapolated"]


def test_vllm_and_gpu_rows_say_why_they_were_not_measured(run):
    vllm_missing = importlib.util.find_spec("vllm") is None
    rows = [_one(run, "merge + swap: vLLM engine (CUDA graphs)", "ram_plus", p) for p in ("compact", "host_mapped")]
    rows.append(_one(run, "generate: vLLM items/s"))
    for row in rows:
        assert row["status"].startswith("not measured: ")
        assert row["seconds"] is None and row["full_seconds"] is None
        if vllm_missing:
            assert "vLLM is not importable" in row["status"]
    parity = _one(run, "parity: greedy vLLM vs hf (tiny model)")
    assert parity["status"].startswith("not measured: ") and parity["seconds"] is None


def test_plan_rows_give_the_full_size_gpu_bytes_per_placement(run):
    rows = {p: _one(run, "plan: full size beside a vLLM engine", "", p) for p in PLACEMENTS}
    for placement, row in rows.items():
        assert row["status"] == "planned" and row["seconds"] is None
        assert row["data"]["gpu_memory"] == 80 * 2**30 and "no GPU here: planned for 80 GiB" in row["note"]
        d = row["data"]
        # the plan's GPU components, nothing added: the swap streams (no listed merged model)
        assert d["gpu_peak"] == sum(d["gpu_components"].values()) == d["merger"] + d["engine"]
        assert d["gpu_resident"] == d["gpu_peak"] - d["gpu_components"]["merge temporaries"]
        assert "merged_model" not in d and "swap_weights streams the merged tensors" in row["note"]
        assert d["engine_settings"]["max_num_seqs"] == 64 and d["engine_settings"]["max_model_len"] == 4096
        assert d["fits"] and d["refusal"] is None and d["whole_tensor_methods"] == []
    # inputs on the device cost more GPU memory than mapped host inputs; compact lies between
    assert rows["host_mapped"]["data"]["merger"] < rows["compact"]["data"]["merger"] < rows["device"]["data"]["merger"]


def _inputs_7b(gpu_check, tmp_path):
    from evomerge.fixture import FixtureSpec, paper_agents, parameter_count, qwen2_tensors, write_fixture

    full = FixtureSpec("7b", paper_agents(3), headers_only=True, with_tokenizer=False)
    res = write_fixture(full, tmp_path / "h")  # sparse files: headers only
    return gpu_check.Inputs(res.paths["base"], [res.paths[a.name] for a in full.agents], res.parameters,
                            parameter_count(full.shape), res.bytes_per_model,
                            max(t.numel for t in qwen2_tensors(full.shape)), [a.density for a in full.agents], None)


PARAMS_7B = 7_615_616_512
EMBED_7B = 152_064 * 3_584  # the largest tensor
BLOCK_7B = 512 * 2**20 // (4 * 4)  # ResidentMerger's default 512 MiB over 4 float32 operand rows
ENGINE_7B = 2 * PARAMS_7B + 14 * 2**30 + 3 * 2**30  # bf16 weights + KV (28 x 4 x 128 x 2 x 2 x 4096 x 64) + reserve


def test_plan_at_7b_shapes_an_h100_holds_compact_and_host_mapped_beside_the_engine_not_device(gpu_check, tmp_path):
    """3 x 7B RAM+ by the memory plan beside the check's vLLM engine (max_model_len 4096, 64 sequences): every
    rule row-blockable, so the workspace is the 512 MiB bound; the swap streams, so nothing more is listed."""
    from evomerge.memory_plan import compact_agent_bytes

    inputs = _inputs_7b(gpu_check, tmp_path)
    options = {"max_model_len": 4096, "max_num_seqs": 64}
    h100 = {r.placement: r for r in gpu_check.full_size_plan(inputs, ["ram_plus"], 80 * 2**30, options)}
    h200 = {r.placement: r for r in gpu_check.full_size_plan(inputs, ["ram_plus"], 141 * 2**30, options)}
    temps = int(3.5 * BLOCK_7B * 4) + 2 * EMBED_7B  # RAM+ (4 copies) per block less the cast + the bf16 result
    merger = {"device": 4 * 2 * PARAMS_7B, "host_mapped": 0,
              "compact": 2 * PARAMS_7B + sum(compact_agent_bytes(PARAMS_7B, 339, 2, d) for d in (0.032, 0.462, 0.543))}
    for placement, inputs_bytes in merger.items():
        d = h100[placement].data
        assert d["gpu_components"]["workspace"] == 512 * 2**20 and d["gpu_components"]["merge temporaries"] == temps
        assert d["merger"] == 600 * 2**20 + inputs_bytes + 512 * 2**20 + temps
        assert d["engine"] == ENGINE_7B and d["gpu_peak"] == d["merger"] + ENGINE_7B
        assert d["engine_settings"]["gpu_memory_utilization"] == 0.39 and h200[placement].data["fits"]
        assert h200[placement].data["engine_settings"]["gpu_memory_utilization"] == 0.23
    assert h100["device"].data["gpu_peak"] == 97_135_549_440  # 90.46 GiB
    assert h100["compact"].data["gpu_peak"] == 70_137_135_243  # 65.32 GiB
    assert h100["host_mapped"].data["gpu_peak"] == 36_210_617_344  # 33.72 GiB
    assert not h100["device"].data["fits"] and "does NOT fit: one worker needs 90.46 GiB" in h100["device"].note
    assert "use placement host_mapped" in h100["device"].data["refusal"]
    assert h100["compact"].data["fits"] and h100["host_mapped"].data["fits"]


def test_gpu_need_is_the_plans_merger_without_the_context_this_process_holds(gpu_check, tmp_path):
    inputs = _inputs_7b(gpu_check, tmp_path)
    options = {"max_model_len": 4096, "max_num_seqs": 64}
    temps = int(3.5 * BLOCK_7B * 4) + 2 * EMBED_7B
    need = {p: gpu_check.gpu_need(p, inputs, ["ram_plus"], 80 * 2**30, options) for p in PLACEMENTS}
    assert need["host_mapped"] == 512 * 2**20 + temps  # inputs stay in the page cache
    assert need["device"] == 4 * 2 * PARAMS_7B + 512 * 2**20 + temps
    full = {r.placement: r.data["merger"] for r in gpu_check.full_size_plan(inputs, ["ram_plus"], 80 * 2**30, options)}
    assert all(need[p] == full[p] - 600 * 2**20 for p in PLACEMENTS)


def test_no_row_failed_and_meta_records_the_environment(run):
    assert [r for r in run["rows"] if r["status"].startswith("failed")] == []
    assert run["meta"]["environment"]["device"] == "cpu"
    assert run["meta"]["goals"]["resident"].startswith("RAM+ resident merge + swap < 5 s")
    assert 0 < run["meta"]["wall_seconds"] < 120


def test_a_compared_tensor_that_differs_is_reported(gpu_check):
    import torch

    want = {"a": torch.arange(6, dtype=torch.float32).to(torch.bfloat16)}
    got = {"a": want["a"].clone()}
    assert gpu_check.compare(got, want)[0]
    got["a"][3] = 0.5
    ok, text = gpu_check.compare(got, want)
    assert not ok and "a: 1 entries differ, max |diff| 2.5" in text
    # -0.0 and 0.0 are equal numbers but different bits: bit for bit means bits
    ok, _ = gpu_check.compare({"z": torch.tensor([-0.0]).to(torch.bfloat16)}, {"z": torch.tensor([0.0]).to(torch.bfloat16)})
    assert not ok


def test_the_deadline_cuts_a_step_into_a_not_measured_row(gpu_check):
    import time

    check = gpu_check.Check(SimpleNamespace(budget_s=gpu_check.RESERVE_S + 0.3, verbose=False))

    def slow(row):
        row.seconds = 1.0
        time.sleep(5)

    row = check.run(gpu_check.Row("slow"), slow)
    assert row.status == "not measured: cut by the --budget-s deadline" and row.seconds is None
    later = check.run(gpu_check.Row("later"), lambda row: None)
    assert later.status == "not measured: the --budget-s deadline had passed before this step"


def test_an_error_is_a_failed_row_not_a_figure(gpu_check):
    check = gpu_check.Check(SimpleNamespace(budget_s=60, verbose=False))

    def broken(row):
        row.seconds = 1.0
        raise ValueError("boom")

    row = check.run(gpu_check.Row("broken"), broken)
    assert row.status == "failed: ValueError: boom" and row.seconds is None


def test_the_table_lists_every_row(gpu_check, run):
    rows = [gpu_check.Row(**{k: v for k, v in r.items()}) for r in run["rows"]]
    check = gpu_check.Check(SimpleNamespace(budget_s=60, verbose=False))
    check.rows = rows
    check.meta = run["meta"]
    text = gpu_check.table(check)
    assert len(text.splitlines()) == 2 + len(rows)
    # 1 generation + 3 disk + 3 placements x (load + 3 merges + hf swap) + 2 vLLM swaps + items/s + 3 plan + parity
    assert len(rows) == 1 + 3 + 3 * 5 + 2 + 1 + 3 + 1



class _StandInEngine:
    """Plays vLLM's part (no vLLM here): records its settings, consumes swaps as VLLMGenerator does (streamed,
    one pair at a time), answers generate with usage; checks the plumbing of the vLLM rows, not vLLM."""

    started: list = []

    def __init__(self, model, **kwargs):
        self.kwargs, self.swaps, self.closed, self.last_usage = kwargs, [], False, {}
        _StandInEngine.started.append(self)

    def swap_weights(self, weights):
        self.swaps.append([name for name, _ in weights])
        return len(self.swaps[-1])

    def generate(self, requests, settings):
        self.last_usage = {"requests": len(requests), "prompt_tokens": 3 * len(requests),
                           "completion_tokens": settings.max_new_tokens * len(requests), "seconds": 0.01}
        return [[""] for _ in requests]

    def close(self):
        self.closed = True


def test_vllm_rows_share_one_engine_and_report_items_per_s(gpu_check, tmp_path, monkeypatch):
    import torch

    import evaluators.backends.vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "VLLMGenerator", _StandInEngine)
    monkeypatch.setattr(gpu_check, "_vllm_missing", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (70 * 2**30, 80 * 2**30))
    _StandInEngine.started.clear()
    args = gpu_check.parse_args(["--preset", "tiny", "--device", "cpu", "--methods", "ram_plus",
                                 "--placements", "host_mapped,compact", "--vllm-items", "8", "--vllm-tokens", "4"])
    check = gpu_check.Check(args)
    device = torch.device("cpu")
    inputs = gpu_check.generate_inputs(check, device, tmp_path)
    gpu_check.placements(check, device, inputs, {}, gpu_check.sample_names(inputs, 3))
    gpu_check.vllm_items(check, device, inputs)

    assert len(_StandInEngine.started) == 1  # one engine for both placements
    engine = _StandInEngine.started[0]
    assert engine.kwargs["max_model_len"] == 4096 and engine.kwargs["engine_kwargs"]["max_num_seqs"] == 64
    assert 0 < engine.kwargs["engine_kwargs"]["gpu_memory_utilization"] < 1  # the memory plan's setting
    assert len(engine.swaps) == 4 and all(len(s) == 26 for s in engine.swaps)  # warm + timed, per placement
    assert engine.closed
    swaps = [r for r in check.rows if r.step == gpu_check.VLLM_SWAP]
    assert [r.placement for r in swaps] == ["host_mapped", "compact"]
    assert all(r.status == "measured" and r.seconds > 0 for r in swaps)
    assert swaps[0].data["engine_start_seconds"] is not None and swaps[1].data["engine_start_seconds"] is None
    assert "host-streamed" in swaps[0].goal and "resident" in swaps[1].goal
    # CUDA graphs are read back from the engine's config, never assumed: the stand-in has none to read
    assert swaps[0].data["enforce_eager"] is None and "CUDA graphs: unknown" in swaps[0].note
    (items,) = [r for r in check.rows if r.step == gpu_check.VLLM_ITEMS]
    assert items.status == "measured" and items.data["items_per_s"] > 0 and items.data["requests"] == 8


def test_device_drawn_fixture_with_fewer_layers_keeps_the_paper_densities(tmp_path):
    """write_fixture(device=...) (the check's fast path, here on the CPU) with FixtureSpec.layers: the widths
    stay, the layers shrink, and the agents still change the paper's shares of entries by > 1e-5."""
    import json as json_

    from safetensors.torch import load_file

    from evomerge.fixture import FixtureSpec, measured_densities, paper_agents, write_fixture

    spec = FixtureSpec("tiny", paper_agents(3), with_tokenizer=False, layers=1)
    res = write_fixture(spec, tmp_path, device="cpu")
    base = load_file(str(res.paths["base"] / "model.safetensors"))
    assert not any(n.startswith("model.layers.1.") for n in base) and "model.layers.0.mlp.up_proj.weight" in base
    assert json_.loads((res.paths["base"] / "config.json").read_text())["num_hidden_layers"] == 1
    agents = [load_file(str(res.paths[a.name] / "model.safetensors")) for a in spec.agents]
    name = "model.embed_tokens.weight"  # 65536 entries
    for got, want in zip(measured_densities(base[name], [a[name] for a in agents]), (0.032, 0.462, 0.543)):
        assert abs(got - want) < 0.01


def test_a_vllm_engine_the_free_memory_cannot_hold_is_not_started(gpu_check, tmp_path, monkeypatch):
    """The engine's gpu_memory_utilization comes from the memory plan of the generated inputs; with less free
    memory than that share of the GPU, the swap row says so and no engine starts (nothing else is reserved:
    the swap streams)."""
    import torch

    import evaluators.backends.vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "VLLMGenerator", _StandInEngine)
    monkeypatch.setattr(gpu_check, "_vllm_missing", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**30, 80 * 2**30))
    _StandInEngine.started.clear()
    args = gpu_check.parse_args(["--preset", "tiny", "--device", "cpu", "--methods", "ram_plus",
                                 "--placements", "host_mapped"])
    check = gpu_check.Check(args)
    device = torch.device("cpu")
    inputs = gpu_check.generate_inputs(check, device, tmp_path)
    gpu_check.placements(check, device, inputs, {}, gpu_check.sample_names(inputs, 3))
    (swap,) = [r for r in check.rows if r.step == gpu_check.VLLM_SWAP]
    assert swap.status == "not measured: the engine (0.04 x 80 GiB, memory plan) needs 3.2 GiB, 1.0 GiB free " \
                          "beside the resident inputs"
    assert _StandInEngine.started == []
