"""GPU check (issue 13 §5): one command that measures the paper's 7B merge-and-swap path on one GPU.

    python benchmarks/gpu_check.py --json gpu_check.json            # on a GPU machine: < 8 min on an H100
    python benchmarks/gpu_check.py --preset tiny --device cpu        # the same logic on a CPU (the test)

Prints one table and (--json) writes the same rows for the README:
  - inputs: a Qwen2.5-7B-shaped bf16 base + 3 agents with the paper's densities (evomerge/fixture.py,
    preset 7b), drawn on the GPU and written as real safetensors checkpoints (to /dev/shm when it has room);
    `--layers N` keeps the 7B widths with N of the 28 decoder layers (default 4: 4 x 4.1 GB instead of
    4 x 15.2 GB, which disk, RAM and the 8 minutes could not hold); every time measured on N layers is
    also given at the preset's full size, scaled by the parameter count, and labelled "extrapolated";
  - RAM+, TIES and task-arithmetic merges by the disk path (`merge_to_disk`, the API of `evomerge merge`,
    on the same device) and by each ResidentMerger placement: device, host_mapped (mapped files streamed
    through a pinned buffer into merges on the GPU), compact; each placement's merged tensors are compared
    with the disk path's on a sample of tensors, bit for bit (see `compare`);
  - merge + swap into the hf backend's resident model and into a vLLM GPU engine (in-place reload, CUDA
    graphs on) for the resident and the host-streamed placements, against the goals (RAM+ 3 x 7B resident
    merge + swap < 5 s on one H100; host-streamed < 10 s);
  - items/s of the vLLM backend on the 7B-shaped engine, and greedy parity vLLM vs hf on a tiny model
    (before and after an in-place swap, under CUDA graphs);
  - per placement, evomerge's memory plan (evomerge/memory_plan.py) at the preset's full size (headers-only
    sparse checkpoints) of one GPU worker: the merger beside a vLLM engine with the check's settings, its GPU
    resident and peak bytes, fits or the plan's refusal, and the engine settings it gives, against this GPU's
    memory (or --gpu-memory-gib without a GPU); swap_weights streams the merged tensors (nothing listed).

On the GPU machine evomerge needs only pydantic beyond the image's packages (carried as wheels: see
docs/benchmarks.md "GPU check"); vLLM is optional (its rows say "not measured" without it).

Anything whose prerequisite is missing (no CUDA, vLLM not importable, a placement that does not fit the
GPU by evomerge's memory plan, the --budget-s deadline) is a row "not measured: <reason>"; an error is a row
"failed: <error>". No figure is ever estimated in place of a measurement except the labelled extrapolation.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # `python benchmarks/gpu_check.py` from a checkout: import this tree's evomerge
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = {  # the paper's settings (experiments/paper/table1_three_agents.yaml; one grid point each)
    "ram_plus": {"epsilon": 1.0e-5, "r": 0.1, "alpha": 2.0},
    "ties": {"lambda": 0.5, "density": 0.2},
    "task_arithmetic": {"lambda": 0.5},
}
PLACEMENTS = ("device", "host_mapped", "compact")
GOALS = {  # issue 13 §5, for 3 x 7B on one H100
    "resident": ("RAM+ resident merge + swap < 5 s", 5.0),
    "host_streamed": ("RAM+ host-streamed merge + swap < 10 s", 10.0),
}
RESERVE_S = 3.0  # of --budget-s kept for printing the table and writing the JSON
PARITY_PROMPTS = ("def add(a, b):", "The capital of France is", "import numpy as np\n")


# -- rows and the deadline ----------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    method: str = ""
    placement: str = ""
    status: str = "measured"  # measured | not measured: <why> | failed: <error>
    seconds: float | None = None  # measured, on the generated inputs
    full_seconds: float | None = None  # at the preset's full size: equal to seconds, or extrapolated
    extrapolated: bool = False
    goal: str = ""
    goal_met: bool | None = None
    check: str = ""  # correctness check of the row (tensor equality, parity)
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class BudgetExceeded(Exception):
    pass


class Deadline:
    """The global --budget-s deadline: a step running past it is interrupted (SIGALRM raises between
    Python bytecodes, i.e. after the current torch call returns) and later steps are not started."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.end = self.start + max(0.0, budget_s - RESERVE_S)

    def remaining(self) -> float:
        return self.end - time.perf_counter()

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        left = self.remaining()
        if left <= 0:
            raise BudgetExceeded("the --budget-s deadline had passed before this step")

        def _raise(signum, frame):
            raise BudgetExceeded("cut by the --budget-s deadline")

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class Check:
    """Runs steps under the deadline, turns missing prerequisites and errors into rows."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.deadline = Deadline(args.budget_s)
        self.rows: list[Row] = []
        self.meta: dict[str, Any] = {}
        self.judged = False  # goals apply (7b preset on a GPU)
        self.engine = None  # the vLLM engine, shared by the placements' swaps, closed after items/s
        self.engine_util: float | None = None
        self.engine_swapped = False

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        if self.args.verbose:
            print(f"[{time.perf_counter() - self.deadline.start:7.1f} s] {_row_line(row)}", file=sys.stderr, flush=True)
        return row

    def skip(self, reason: str, **row: Any) -> Row:
        return self.add(Row(status=f"not measured: {reason}", **row))

    def run(self, template: Row, fn: Callable[[Row], None]) -> Row:
        """fn fills the row (seconds, check, data); an exception becomes the row's status."""
        row = template
        try:
            with self.deadline.armed():
                fn(row)
        except BudgetExceeded as exc:
            row.status, row.seconds, row.full_seconds = f"not measured: {exc}", None, None
        except Exception as exc:  # noqa: BLE001 - the table must still be printed; the error is the row
            row.status, row.seconds, row.full_seconds = f"failed: {type(exc).__name__}: {exc}", None, None
        return self.add(row)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


# -- inputs ---------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    base: Path
    models: list[Path]
    params: int  # per checkpoint, generated
    full_params: int  # per checkpoint at the preset's full layer count
    bytes_per_model: int
    max_float_numel: int
    densities: list[float]
    full_headers: Path | None  # headers-only full-size checkpoints (for the plan at full size)

    @property
    def scale(self) -> float:
        return self.full_params / self.params

    def extrapolate(self, row: Row) -> None:
        if row.seconds is None:
            return
        row.full_seconds = row.seconds * self.scale
        row.extrapolated = self.scale != 1.0


def fmt_bytes(n: int) -> str:
    from evomerge.memory_plan import fmt_bytes as plan_fmt

    return plan_fmt(int(n))


def work_dir(args, needed: int) -> Path:
    """--work-dir, else /dev/shm when it has room (RAM: reads at memory speed), else the system temp dir."""
    if args.work_dir:
        root = Path(args.work_dir)
    else:
        shm = Path("/dev/shm")
        root = Path(tempfile.gettempdir())
        if shm.is_dir() and shutil.disk_usage(shm).free > 1.2 * needed:
            root = shm
        root = root / f"evomerge-gpu-check-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed:
        raise RuntimeError(f"{root} has {free / 1e9:.1f} GB free but the inputs and one merged output need "
                           f"{needed / 1e9:.1f} GB; pass --layers with fewer layers or --work-dir elsewhere")
    return root


def generate_inputs(check: Check, device, root: Path) -> Inputs | None:
    from evomerge.fixture import FixtureSpec, paper_agents, parameter_count, write_fixture

    args = check.args
    spec = FixtureSpec(args.preset, paper_agents(3), seed=0, layers=args.layers, shard_size="5GB")
    full = FixtureSpec(args.preset, paper_agents(3), seed=0, headers_only=True, with_tokenizer=False)
    result: dict[str, Any] = {}

    def step(row: Row) -> None:
        row.seconds, res = timed(device, lambda: write_fixture(spec, root / "inputs", overwrite=True, device=device))
        result["res"] = res
        row.note = (f"{spec.shape.num_hidden_layers} of {full.shape.num_hidden_layers} layers, "
                    f"{res.parameters:,} parameters = {fmt_bytes(res.bytes_per_model)} bf16 per checkpoint, "
                    f"drawn on {device.type}, written to {root}")
        row.data = {"layers": spec.shape.num_hidden_layers, "parameters": res.parameters,
                    "bytes_per_model": res.bytes_per_model, "densities": [a.density for a in spec.agents]}

    row = check.run(Row("inputs: generate base + 3 agents"), step)
    if "res" not in result:
        return None
    res = result["res"]
    full_headers = None
    if spec.shape.num_hidden_layers != full.shape.num_hidden_layers:
        full_headers = root / "full_headers"  # sparse files: no disk blocks, headers for the plan
        write_fixture(full, full_headers, overwrite=True)
    from evomerge.fixture import qwen2_tensors

    inputs = Inputs(res.paths["base"], [res.paths[a.name] for a in spec.agents], res.parameters,
                    parameter_count(full.shape), res.bytes_per_model,
                    max(t.numel for t in qwen2_tensors(spec.shape)), [a.density for a in spec.agents], full_headers)
    check.meta["inputs"] = {"preset": args.preset, **row.data, "full_parameters": inputs.full_params,
                            "extrapolation_factor": inputs.scale}
    return inputs


def recipe_for(method: str, inputs: Inputs):
    from evomerge.recipe import MergeRecipe

    return MergeRecipe.from_dict({"method": method, "base": str(inputs.base), "models": [str(m) for m in inputs.models],
                                  "parameters": dict(METHODS[method]), "dtype": "bfloat16"})


def sample_names(inputs: Inputs, k: int) -> list[str]:
    """k float tensors spread over the checkpoint, always with the largest (the embedding)."""
    from evomerge.io.reader import Checkpoint

    ckpt = Checkpoint.open(inputs.base)
    floats = [n for n, t in ckpt.tensors.items() if t.is_float]
    largest = max(floats, key=lambda n: ckpt.tensors[n].numel)
    step = max(1, len(floats) // max(1, k - 1))
    picked = [largest] + floats[::step]
    return list(dict.fromkeys(picked))[:k]


# -- memory: what a placement needs on the GPU (evomerge's memory plan) ----------------------------------

# the plan's components that are the vLLM engine's (weights, KV cache, reserve); the rest is the merger's
ENGINE_COMPONENTS = ("engine", "kv cache")


def row_blockable(methods: list[str], n_models: int) -> dict[str, bool]:
    """method -> its rule at the check's parameters merges in row blocks, asked of the method registry."""
    from evomerge.plan_rules import rule_row_blockable

    return {m: rule_row_blockable(m, METHODS[m], n_models) for m in methods}


def placement_plan(base: Path, models: list[Path], methods: list[str], placement: str, gpu_total: int,
                   engine_options: dict[str, Any], densities: list[float]):
    """evomerge's memory plan of one GPU worker running ResidentMerger(placement) as the check builds it
    (default row-block bound, the agents' densities) beside a vLLM engine with the check's settings."""
    from evomerge.memory_plan import PlanRequest, build_plan
    from evomerge.resident import DEFAULT_WORKSPACE_BYTES

    return build_plan(PlanRequest(str(base), tuple(str(m) for m in models), tuple(methods), backend="vllm",
                                  engine_options=engine_options, gpus=1, gpu_memory=gpu_total, placement=placement,
                                  densities=tuple(densities), workspace_bytes=DEFAULT_WORKSPACE_BYTES,
                                  row_blockable=row_blockable(methods, len(models))))


def merger_gpu_bytes(worker, with_context: bool = True) -> int:
    """The merger's share of a planned worker's GPU peak: its GPU components that are not the engine's
    (CUDA context unless `with_context` is False, inputs on the GPU, workspace, merge temporaries)."""
    return sum(c.bytes for c in worker.components if c.where == "gpu" and not c.name.startswith(ENGINE_COMPONENTS)
               and (with_context or not c.name.startswith("cuda context")))


def gpu_need(placement: str, inputs: Inputs, methods: list[str], gpu_total: int, engine_options: dict[str, Any]) -> int:
    """GPU bytes a placement's ResidentMerger of the generated inputs needs at its peak, by the memory plan;
    compared with the free memory of this process, which already holds its CUDA context (left out here)."""
    plan = placement_plan(inputs.base, inputs.models, methods, placement, gpu_total, engine_options, inputs.densities)
    return merger_gpu_bytes(plan.nodes[0].workers[0], with_context=False)


def check_engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM engine the check starts (and plans for): --max-model-len, --vllm-seqs."""
    return {"max_model_len": args.max_model_len, "max_num_seqs": args.vllm_seqs}


# -- the steps -----------------------------------------------------------------------------------------


def disk_path(check: Check, device, inputs: Inputs, root: Path, sample: list[str]) -> dict[str, dict[str, Any]]:
    """merge_to_disk per method; the sample tensors of each output are kept (CPU) for the comparisons."""
    from safetensors import safe_open

    from evomerge.engine import merge_to_disk

    reference: dict[str, dict[str, Any]] = {}
    for method in check.args.methods:
        out = root / f"disk_{method}"

        def step(row: Row, method=method, out=out) -> None:
            shutil.rmtree(out, ignore_errors=True)
            row.seconds, res = timed(device, lambda: merge_to_disk(recipe_for(method, inputs), out, device=device,
                                                                   shard_size="5GB", overwrite=True))
            inputs.extrapolate(row)
            tensors = {}
            for file in res.files:
                with safe_open(str(out / file), framework="pt") as fh:
                    for name in fh.keys():
                        if name in sample:
                            tensors[name] = fh.get_tensor(name)
            reference[method] = tensors
            row.note = (f"{res.tensors} tensors written ({', '.join(res.files)}); reads the inputs from files"
                        + ("; with RAM+'s overlap pass, as `evomerge merge` runs it" if method == "ram_plus" else ""))

        check.run(Row("merge: disk path (evomerge merge API)", method, "files"), step)
        shutil.rmtree(out, ignore_errors=True)  # room for the next one
    return reference


def compare(got: dict[str, Any], want: dict[str, Any]) -> tuple[bool, str]:
    """Bit for bit on every device: the disk path and ResidentMerger run the same merge_tensor on the same
    device (the CUDA kernels here are element-wise or integer counts per entry, so row blocks do not change
    results); a difference is reported, with its size, never tolerated."""
    import torch

    if set(got) != set(want):
        return False, f"sample tensors missing: {sorted(set(want) ^ set(got))}"
    bad = []
    for name, w in want.items():
        g = got[name]
        if g.dtype != w.dtype or g.shape != w.shape:
            bad.append(f"{name}: {g.dtype} {list(g.shape)} vs {w.dtype} {list(w.shape)}")
        elif not torch.equal(g.view(torch.int16) if g.dtype == torch.bfloat16 else g,
                             w.view(torch.int16) if w.dtype == torch.bfloat16 else w):
            diff = (g.float() - w.float()).abs()
            bad.append(f"{name}: {int((diff > 0).sum())} entries differ, max |diff| {float(diff.max()):.3g}")
    if bad:
        return False, "differs from the disk path: " + "; ".join(bad)
    return True, f"equal to the disk path bit for bit ({len(want)} sample tensors)"


def placements(check: Check, device, inputs: Inputs, reference: dict[str, dict[str, Any]], sample: list[str]) -> None:
    import torch

    from evomerge.resident import ResidentMerger

    methods = check.args.methods
    for placement in check.args.placements:
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            need = gpu_need(placement, inputs, methods, total, check_engine_options(check.args))
            free = torch.cuda.mem_get_info(device)[0]
            if need > free:
                skip_placement(check, placement, f"needs {need / 2**30:.1f} GiB of GPU memory by the memory plan, "
                                                 f"{free / 2**30:.1f} GiB free")
                continue
        holder: dict[str, Any] = {}

        def load(row: Row, placement=placement) -> None:
            row.seconds, holder["m"] = timed(device, lambda: ResidentMerger(
                inputs.base, inputs.models, device=device, placement=placement))
            inputs.extrapolate(row)
            mem = holder["m"].memory_bytes()
            row.data = {"memory_bytes": mem}
            row.note = (f"inputs {fmt_bytes(mem['inputs'])} private, {fmt_bytes(mem['mapped'])} mapped, "
                        f"workspace {fmt_bytes(mem['workspace'])}")

        row = check.run(Row("load: resident inputs", "", placement), load)
        merger = holder.get("m")
        if merger is None:
            skip_placement(check, placement, f"the inputs did not load ({row.status})", load=False)
            continue
        for method in methods:
            def merge(row: Row, method=method) -> None:
                recipe = recipe_for(method, inputs)
                got = {}
                first, _ = timed(device, lambda: [got.setdefault(n, t.to("cpu", copy=True)) for n, t in merger.merge(recipe)
                                                  if n in sample])
                row.seconds, _ = timed(device, lambda: [None for _ in merger.merge(recipe)])
                inputs.extrapolate(row)
                if method in reference:
                    ok, row.check = compare(got, reference[method])
                    if not ok:
                        row.status = "failed: merged tensors differ from the disk path"
                else:
                    row.check = "not compared: the disk path did not run"
                row.note = f"second merge (first {first:.2f} s, with the sample copies{' and the overlap pass' if method == 'ram_plus' else ''})"
                row.data = {"first_seconds": first}

            check.run(Row("merge: resident", method, placement), merge)
        if "ram_plus" in methods:
            hf_swap(check, device, inputs, merger, placement)
            if placement in check.args.vllm_placements:
                vllm_swap(check, device, inputs, merger, placement)
        del merger, holder
        if device.type == "cuda":
            torch.cuda.empty_cache()


HF_SWAP = "merge + swap: hf backend"
VLLM_SWAP = "merge + swap: vLLM engine (CUDA graphs)"
VLLM_ITEMS = "generate: vLLM items/s"


def skip_placement(check: Check, placement: str, reason: str, load: bool = True) -> None:
    """Every row a placement would have had, each saying why it was not measured."""
    if load:
        check.skip(reason, step="load: resident inputs", placement=placement)
    for method in check.args.methods:
        check.skip(reason, step="merge: resident", method=method, placement=placement)
    if "ram_plus" in check.args.methods:
        check.skip(reason, step=HF_SWAP, method="ram_plus", placement=placement)
        if placement in check.args.vllm_placements:
            check.skip(reason, step=VLLM_SWAP, method="ram_plus", placement=placement)


def goal_of(placement: str) -> str:
    return "host_streamed" if placement == "host_mapped" else "resident"


def _goal(row: Row, key: str, judged: bool) -> None:
    """The goal beside the figure; judged (met / NOT met) only where it applies: 7B shapes on a GPU."""
    text, limit = GOALS[key]
    row.goal = text if judged else f"{text} (judged for the 7b preset on a GPU only)"
    if judged and row.full_seconds is not None:
        row.goal_met = row.full_seconds < limit


def hf_swap(check: Check, device, inputs: Inputs, merger, placement: str) -> None:
    """RAM+ merge streamed into the hf backend's resident model (its swap_weights takes the iterator)."""
    from evaluators.backends.hf import HFGenerator

    if device.type == "cuda":
        import torch

        need = inputs.bytes_per_model + 2 * inputs.max_float_numel  # the bf16 model + one merged tensor
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            check.skip(f"the hf model and one merged tensor need {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free "
                       "beside the resident inputs", step=HF_SWAP, method="ram_plus", placement=placement)
            return

    def step(row: Row) -> None:
        gen = HFGenerator(inputs.base, device=str(device), dtype="bfloat16", progress=False)
        try:
            recipe = recipe_for("ram_plus", inputs)
            gen.swap_weights(merger.merge(recipe))  # warm: the overlap statistics are cached, as in a search
            row.seconds, copied = timed(device, lambda: gen.swap_weights(merger.merge(recipe)))
            inputs.extrapolate(row)
            _goal(row, goal_of(placement), check.judged)
            row.note = f"{copied} tensors copied into a bf16 transformers model on {device.type}"
        finally:
            del gen

    check.run(Row(HF_SWAP, "ram_plus", placement), step)


def _vllm_missing(device) -> str | None:
    """The first missing prerequisite of the vLLM GPU rows, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not importable in this environment (install vllm for this torch/CUDA)"
    if device.type != "cuda":
        return "no CUDA device (the check is for vLLM's GPU engine)"
    return None


def vllm_swap(check: Check, device, inputs: Inputs, merger, placement: str) -> None:
    """RAM+ merge + in-place reload into the vLLM engine (CUDA graphs), started on first use with the memory
    plan's gpu_memory_utilization and kept for the next placement (one graph capture, one engine per process)."""
    import torch

    missing = _vllm_missing(device)
    if missing:
        check.skip(missing, step=VLLM_SWAP, method="ram_plus", placement=placement)
        return
    options = check_engine_options(check.args)
    # swap_weights streams the merged tensors into vLLM's loader: beyond the engine, one merged tensor at a time,
    # which the merger's planned temporaries already hold (they were checked at load)
    util = check.engine_util
    if check.engine is None:
        total = torch.cuda.get_device_properties(device).total_memory
        plan = placement_plan(inputs.base, inputs.models, ["ram_plus"], placement, total, options, inputs.densities)
        util = plan.nodes[0].workers[0].engine["gpu_memory_utilization"]
        need, free = util * total, torch.cuda.mem_get_info(device)[0]
        if need > free:
            check.skip(f"the engine ({util:.2f} x {total / 2**30:.0f} GiB, memory plan) needs {need / 2**30:.1f} GiB, "
                       f"{free / 2**30:.1f} GiB free beside the resident inputs",
                       step=VLLM_SWAP, method="ram_plus", placement=placement)
            return

    def swap(row: Row) -> None:
        from evaluators.backends.vllm import VLLMGenerator

        start = None
        if check.engine is None:
            start, check.engine = timed(device, lambda: VLLMGenerator(
                inputs.base, max_model_len=options["max_model_len"], seed=0, progress=False,
                engine_kwargs={"gpu_memory_utilization": util, "max_num_seqs": options["max_num_seqs"]}))
            check.engine_util = util
        recipe = recipe_for("ram_plus", inputs)
        check.engine.swap_weights(merger.merge(recipe))  # warm (overlap statistics cached, as in a search)
        row.seconds, copied = timed(device, lambda: check.engine.swap_weights(merger.merge(recipe)))
        inputs.extrapolate(row)
        _goal(row, goal_of(placement), check.judged)
        eager = _enforce_eager(check.engine)
        graphs = {False: "CUDA graphs on", True: "eager (no CUDA graphs)", None: "CUDA graphs: unknown"}[eager]
        started = "" if start is None else f"; engine started in {start:.1f} s"
        row.note = f"{copied} tensors, {graphs} (gpu_memory_utilization {util}, from the memory plan){started}"
        row.data = {"engine_start_seconds": start, "gpu_memory_utilization": util, "enforce_eager": eager}
        check.engine_swapped = True

    check.run(Row(VLLM_SWAP, "ram_plus", placement), swap)


def _enforce_eager(engine) -> bool | None:
    """What the running engine was configured with (read back, not assumed); None if this vLLM hides it."""
    try:
        return bool(engine._llm.llm_engine.vllm_config.model_config.enforce_eager)
    except AttributeError:
        return None


def vllm_items(check: Check, device, inputs: Inputs) -> None:
    """Items/s of the vLLM backend on the 7B-shaped engine holding a merged candidate; then the engine is closed."""
    import torch

    from evaluators.protocol import GenerationSettings, Request

    missing = _vllm_missing(device)
    if missing or check.engine is None or not check.engine_swapped:
        check.skip(missing or "no vLLM engine holds a merged candidate (see the swap rows)", step=VLLM_ITEMS)
        if check.engine is not None:
            check.engine.close()
            check.engine = None
        return
    gen = check.engine

    def items(row: Row) -> None:
        n = check.args.vllm_items
        requests = [Request(f"r{i}", f"{PARITY_PROMPTS[i % len(PARITY_PROMPTS)]} {i}") for i in range(n)]
        settings = GenerationSettings(max_new_tokens=check.args.vllm_tokens)
        gen.generate(requests[:2], settings)  # warm
        seconds, _ = timed(device, lambda: gen.generate(requests, settings))
        usage = gen.last_usage
        row.seconds = seconds
        row.data = {"items_per_s": n / seconds, "completion_tokens_per_s": usage["completion_tokens"] / seconds, **usage}
        row.note = (f"{n / seconds:.1f} items/s, {usage['completion_tokens'] / seconds:.0f} generated tokens/s "
                    f"({n} greedy requests, up to {settings.max_new_tokens} new tokens, max_num_seqs "
                    f"{check.args.vllm_seqs}; {check.meta['inputs']['layers']} layers: not extrapolated)")

    try:
        check.run(Row(VLLM_ITEMS), items)
    finally:
        gen.close()
        check.engine = None
        torch.cuda.empty_cache()


def parity(check: Check, device, root: Path) -> None:
    """Greedy completions of the vllm and hf backends on a tiny float32 model, before and after swapping
    another model's weights into the engine in place (CUDA graphs on)."""
    step = "parity: greedy vLLM vs hf (tiny model)"
    missing = _vllm_missing(device)
    if missing:
        check.skip(missing, step=step)
        return

    def run(row: Row) -> None:
        from evaluators.backends.hf import HFGenerator
        from evaluators.backends.vllm import VLLMGenerator
        from evaluators.protocol import GenerationSettings, Request
        from evomerge.tiny_checkpoints import build_tiny_family
        from safetensors.torch import load_file

        family = build_tiny_family(root / "tiny", seed=0)
        requests = [Request(f"p{i}", p) for i, p in enumerate(PARITY_PROMPTS)] + [
            Request("chat", [{"role": "user", "content": "Write a function that reverses a list."}])]
        settings = GenerationSettings(max_new_tokens=32)
        t0 = time.perf_counter()
        with VLLMGenerator(family["base"], dtype="float32", max_model_len=512, seed=0, progress=False,
                           engine_kwargs={"gpu_memory_utilization": 0.1}) as engine:
            before = engine.generate(requests, settings)
            weights = load_file(str(family["coding"] / "model.safetensors"))
            engine.swap_weights(weights)
            after = engine.generate(requests, settings)
        hf_before = HFGenerator(family["base"], device=str(device), dtype="float32", progress=False).generate(requests, settings)
        hf_after = HFGenerator(family["coding"], device=str(device), dtype="float32", progress=False).generate(requests, settings)
        row.seconds = time.perf_counter() - t0
        same = sum(a == b for a, b in zip(before, hf_before)) + sum(a == b for a, b in zip(after, hf_after))
        row.check = f"{same}/{2 * len(requests)} greedy completions equal (before and after an in-place swap)"
        row.data = {"equal": same, "total": 2 * len(requests)}
        if same != 2 * len(requests):
            row.status = "failed: vLLM and hf greedy completions differ"

    check.run(Row(step), run)


# -- the table -------------------------------------------------------------------------------------------


def _fmt(s: float | None) -> str:
    return "" if s is None else f"{s:.2f}"


def _row_line(r: Row) -> str:
    return f"{r.step} {r.method} {r.placement}: {r.status} {_fmt(r.seconds)}"


def table(check: Check) -> str:
    full_layers = check.meta.get("full_layers")
    head = ["step", "method", "placement", "status", "s (measured)",
            f"s at full size ({full_layers} layers)" if full_layers else "s (full size)", "goal", "check / note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in check.rows:
        full = "" if r.full_seconds is None else _fmt(r.full_seconds) + (" (extrapolated)" if r.extrapolated else "")
        goal = "" if not r.goal else f"{r.goal}: " + {True: "met", False: "NOT met", None: "—"}[r.goal_met]
        note = "; ".join(x for x in (r.check, r.note) if x)
        lines.append("| " + " | ".join([r.step, r.method, r.placement, r.status, _fmt(r.seconds), full, goal, note]) + " |")
    return "\n".join(lines)


def environment(device) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "vllm": None, "host": platform.node(), "cpus": os.cpu_count()}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        env["vllm"] = version("vllm")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update(gpu=props.name, gpu_memory_bytes=total, gpu_free_bytes=free, cuda=torch.version.cuda)
    else:
        env["loadavg"] = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None
    return env


PLAN_STEP = "plan: full size beside a vLLM engine"


def full_size_plan(inputs: Inputs, methods: list[str], total: int, options: dict[str, Any]) -> list[Row]:
    """Per placement, evomerge's memory plan at the preset's full size (headers-only checkpoints) of one GPU
    worker: the merger (ResidentMerger as the check builds it) beside a vLLM engine with the check's settings.
    The swap streams the merged tensors into the engine, so no merged model is listed on the GPU."""
    base = inputs.full_headers / "base" if inputs.full_headers else inputs.base
    models = [inputs.full_headers / p.name for p in inputs.models] if inputs.full_headers else inputs.models
    rows = []
    for placement in PLACEMENTS:
        plan = placement_plan(base, models, methods, placement, total, options, inputs.densities)
        w = plan.nodes[0].workers[0]
        resident, peak = w.total("gpu", peak=False), w.total("gpu")
        gpu = {c.name: c.bytes for c in w.components if c.where == "gpu"}
        verdict = "fits" if plan.fits else f"does NOT fit: {plan.refusal}"
        blocks = ("row blocks: workspace bounded by " + fmt_bytes(w.workspace_bound) if not plan.whole_tensor_methods
                  else "whole-tensor rules (" + ", ".join(plan.whole_tensor_methods) + "): workspace of whole tensors")
        note = (f"GPU peak {fmt_bytes(peak)} (resident {fmt_bytes(resident)}) of {fmt_bytes(total)}: {verdict}; "
                + ", ".join(f"{name} {fmt_bytes(b)}" for name, b in gpu.items())
                + f" ({blocks}); vLLM max_num_seqs {w.engine['max_num_seqs']}, gpu_memory_utilization "
                f"{w.engine['gpu_memory_utilization']}, max_model_len {w.engine['max_model_len']}; swap_weights streams "
                "the merged tensors (no listed merged model)")
        rows.append(Row(PLAN_STEP, "", placement, status="planned", note=note,
                        data={"fits": plan.fits, "refusal": plan.refusal, "gpu_resident": resident, "gpu_peak": peak,
                              "merger": merger_gpu_bytes(w), "engine": peak - merger_gpu_bytes(w),
                              "gpu_components": gpu, "gpu_memory": total, "engine_settings": w.engine,
                              "workspace_bound": w.workspace_bound,
                              "whole_tensor_methods": list(plan.whole_tensor_methods)}))
    return rows


def plan_rows(check: Check, inputs: Inputs, device) -> None:
    import torch

    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        suffix = ""
    else:  # no GPU here: planned for the --gpu-memory of the machine the check is meant for
        total = int(check.args.gpu_memory_gib * 2**30)
        suffix = f" (no GPU here: planned for {check.args.gpu_memory_gib:g} GiB)"
    for row in full_size_plan(inputs, check.args.methods, total, check_engine_options(check.args)):
        row.note += suffix
        check.add(row)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from evomerge.fixture import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="7b", help="fixture shape: tiny, 0.5b, 1.5b, 7b (default 7b)")
    p.add_argument("--layers", type=int, default=None,
                   help="decoder layers to generate (default: 4, or the preset's when fewer); times are also "
                        "given at the preset's full size, extrapolated by the parameter count")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--budget-s", type=float, default=450.0, help="global deadline in seconds (default 450)")
    p.add_argument("--json", default=None, help="write the rows and the environment to this file")
    p.add_argument("--work-dir", default=None, help="where the inputs go (default /dev/shm when it has room)")
    p.add_argument("--keep", action="store_true", help="keep the generated inputs")
    p.add_argument("--methods", default="ram_plus,ties,task_arithmetic")
    p.add_argument("--placements", default=",".join(PLACEMENTS))
    p.add_argument("--vllm-placements", default="compact,host_mapped",
                   help="placements whose merge is swapped into a vLLM engine (default compact,host_mapped: "
                        "the ones the plan fits beside an engine at 7B on an 80 GB GPU)")
    p.add_argument("--gpu-memory-gib", type=float, default=80.0,
                   help="GPU memory the plan rows assume when no GPU is present (default 80, an H100)")
    p.add_argument("--sample", type=int, default=6, help="tensors compared with the disk path per merge")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--vllm-seqs", type=int, default=64)
    p.add_argument("--vllm-items", type=int, default=128)
    p.add_argument("--vllm-tokens", type=int, default=128)
    p.add_argument("--verbose", action="store_true", help="print each row as it is measured (stderr)")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.placements = [x for x in args.placements.split(",") if x]
    args.vllm_placements = [x for x in args.vllm_placements.split(",") if x]
    unknown = sorted(set(args.methods) - set(METHODS)) + sorted(set(args.placements) - set(PLACEMENTS))
    if unknown:
        p.error(f"unknown method(s)/placement(s) {unknown}: methods {sorted(METHODS)}, placements {list(PLACEMENTS)}")
    if args.preset not in PRESETS:
        p.error(f"--preset {args.preset!r}: use one of {', '.join(PRESETS)}")
    full_layers = PRESETS[args.preset].num_hidden_layers
    args.layers = min(4 if args.layers is None else args.layers, full_layers)
    if args.layers < 1:
        p.error("--layers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(argv)
    from evomerge.engine import resolve_device
    from evomerge.fixture import PRESETS, FixtureSpec, paper_agents

    full_layers = PRESETS[args.preset].num_hidden_layers
    device = resolve_device(args.device)
    check = Check(args)
    check.judged = args.preset == "7b" and device.type == "cuda"
    check.meta.update(command=" ".join([os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])]),
                      environment=environment(device), full_layers=full_layers, budget_s=args.budget_s,
                      goals={k: v[0] for k, v in GOALS.items()})
    root = None
    try:
        from evomerge.fixture import parameter_count

        model_bytes = 2 * parameter_count(FixtureSpec(args.preset, paper_agents(3), layers=args.layers).shape)
        try:
            root = work_dir(args, 5 * model_bytes)
        except RuntimeError as exc:
            check.skip(str(exc), step="inputs: generate base + 3 agents")
        inputs = generate_inputs(check, device, root) if root is not None else None
        if inputs is None:
            for m in args.methods:
                check.skip("no inputs", step="merge: disk path (evomerge merge API)", method=m, placement="files")
            for placement in args.placements:
                skip_placement(check, placement, "no inputs")
            check.skip("no inputs", step=VLLM_ITEMS)
        else:
            sample = sample_names(inputs, args.sample)
            check.meta["sample_tensors"] = sample
            reference = disk_path(check, device, inputs, root, sample)
            placements(check, device, inputs, reference, sample)
            vllm_items(check, device, inputs)
            plan_rows(check, inputs, device)
        parity(check, device, root or Path(tempfile.mkdtemp(prefix="evomerge-gpu-check-")))
    finally:
        if root is not None and not args.keep and not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
        check.meta["wall_seconds"] = time.perf_counter() - check.deadline.start
        print(table(check))
        print(f"\n{check.meta['environment'].get('gpu', device.type)}; {check.meta['wall_seconds']:.0f} s of a "
              f"{args.budget_s:.0f} s budget; goals: " + "; ".join(v[0] for v in GOALS.values()))
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": check.meta, "rows": [asdict(r) for r in check.rows]},
                                                  indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
