"""A memory model of a search or sweep worker, and the plan built from it (`evomerge plan`).

Reads only headers: config.json and the safetensors headers of the base and the agents (no weight
is loaded). Per worker it gives the bytes of each component and where it lives:

  runtime        the Python process with torch and evomerge imported (host; measured constant)
  inputs         base + agents in their stored dtype, as ResidentMerger(keep='native') holds them
  workspace      ResidentMerger's float32 Workspace: (agents + 1) rows of the largest float tensor
                 (allocated at construction, touched by the first merge)
  merge temps    the method's temporaries on the largest tensor and the cast of its result
                 (per-method multiples of one float32 copy of that tensor, measured; the peak only)
  engine weights the generation backend's copy of the model (hf: a torch module; vllm: its engine)
  kv cache       layers x kv_heads x head_dim x 2 (K and V) x dtype bytes x max_model_len x max_num_seqs
  cuda context   per GPU process (assumed, not measured here: no GPU on the machine that wrote this)
  engine reserve vLLM's activation peak and CUDA graphs on a GPU (assumed)

and the time of one merge + swap from per-parameter and per-byte costs measured on a CPU.

Placement (where the inputs and the workspace live) is `device` (today's code: on the worker's
device, GPU or CPU) or `host` (on the host while the engine runs on the GPU: merged on the CPU and
copied into the engine; issue 13 §2, not yet wired into the workers). `auto` takes `device` when it
fits and `host` otherwise. A plan that cannot fit is refused with one line saying what to change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from evomerge.errors import EvomergeError

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
Placement = Literal["auto", "device", "host"]


class PlanError(EvomergeError):
    """The configuration cannot fit; the message says what to change."""


# -- constants ------------------------------------------------------------------------------------
# Measured on this project's 2-core shared CPU (contended: other jobs ran), float32 tensor of 16,777,216
# entries, 3 agents of densities 0.032 / 0.462 / 0.543, one torch thread:
#   PYTHONPATH=. python benchmarks/plan_calibrate.py --numel 16777216
# MERGE_TEMPORARIES: the peak extra memory of merging one tensor (method temporaries + float32 result +
# its bf16 cast), in float32 copies of that tensor, measured as VmHWM growth; every measured value was within
# 0.01 of the half-integer given here. (At 4M entries, where glibc reuses freed heap, ram_plus measured 3.5
# and ties 5.0: the 16M figures, where every buffer is its own mapping as for a real embedding, are kept.)
MERGE_TEMPORARIES: dict[str, float] = {
    "ram": 3.0, "ram_plus": 4.0, "ram_plus_soft": 4.0, "linear": 1.5, "task_arithmetic": 1.5, "ties": 6.0,
    "dare_linear": 1.5, "dare_ties": 4.0, "breadcrumbs": 1.5, "breadcrumbs_ties": 4.0, "slerp": 2.5,
}
# CPU seconds per parameter of one merge (workspace fill from bf16, the method, the cast), one thread, contended
MERGE_SECONDS_PER_PARAMETER_CPU: dict[str, float] = {
    "ram": 3.0e-7, "ram_plus": 3.5e-7, "ram_plus_soft": 3.6e-7, "linear": 1.4e-7, "task_arithmetic": 1.3e-7,
    "ties": 5.4e-7, "dare_linear": 1.1e-7, "dare_ties": 4.2e-7, "breadcrumbs": 0.8e-7, "breadcrumbs_ties": 5.1e-7,
    "slerp": 5.1e-7,
}
SWAP_SECONDS_PER_BYTE_CPU = 3.6e-9  # copying bf16 into a float32 module parameter (the hf backend's swap)
RUNTIME_BYTES = 240_893_952  # VmRSS of python with torch and evomerge.engine imported
# Assumed (no GPU here to measure them): a CUDA context with torch's kernels loaded, and vLLM's activation
# peak + CUDA graphs for a 7B model at the default batch sizes.
CUDA_CONTEXT_BYTES = 600 * 2**20
ENGINE_RESERVE_BYTES = 3 * GiB
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default on a GPU (the plan lowers it until the KV cache fits)
DEFAULT_CPU_KV_CACHE_BYTES = 1 * GiB  # evaluators/backends/vllm.py DEFAULT_CPU_KV_CACHE_GIB
DEFAULT_HF_BATCH_SIZE = 16  # evaluators/backends/hf.py


# -- what the headers say -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """One checkpoint's sizes, from its config.json and safetensors headers."""

    path: str
    parameters: int  # stored entries (tied embeddings are stored once)
    stored_bytes: int
    dtype: str  # the dtype most float tensors are stored in
    max_float_numel: int  # entries of the largest float tensor
    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "ModelFacts":
        from evomerge.io.reader import Checkpoint

        ckpt = Checkpoint.open(path)
        cfg = ckpt.config
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            facts = dict(layers=int(cfg["num_hidden_layers"]), kv_heads=int(cfg.get("num_key_value_heads", heads)),
                         head_dim=int(cfg.get("head_dim") or hidden // heads),
                         max_positions=int(cfg.get("max_position_embeddings", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvomergeError(f"{ckpt.path / 'config.json'}: cannot read the attention shape ({exc})") from None
        floats = [t for t in ckpt.tensors.values() if t.is_float]
        return cls(str(ckpt.path), sum(t.numel for t in ckpt.tensors.values()),
                   sum(t.nbytes for t in ckpt.tensors.values()), ckpt.dtype,
                   max((t.numel for t in floats), default=0), **facts)


# -- pure arithmetic ------------------------------------------------------------------------------


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int, max_model_len: int,
                   max_num_seqs: int) -> int:
    """K and V of every layer for max_num_seqs sequences of max_model_len tokens."""
    return layers * kv_heads * head_dim * 2 * dtype_bytes * max_model_len * max_num_seqs


def workspace_bytes(n_models: int, max_float_numel: int) -> int:
    """ResidentMerger(keep='native')'s Workspace: base row + one row per model, float32."""
    return (n_models + 1) * max_float_numel * 4


def merge_temporaries_bytes(methods: Sequence[str], max_float_numel: int) -> int:
    """The largest method's peak temporaries on the largest tensor."""
    unknown = sorted(set(methods) - set(MERGE_TEMPORARIES))
    if unknown:
        raise EvomergeError(f"no measured memory cost for method(s) {unknown}; rerun benchmarks/plan_calibrate.py")
    return math.ceil(max(MERGE_TEMPORARIES[m] for m in methods) * max_float_numel * 4)


def merge_seconds_cpu(methods: Sequence[str], parameters: int) -> float:
    return max(MERGE_SECONDS_PER_PARAMETER_CPU[m] for m in methods) * parameters


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    where: str  # "host" or "gpu"
    peak_only: bool = False  # allocated only while a merge runs


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    device: str  # "cpu" or "cuda"
    placement: str  # where inputs and workspace live: "gpu" or "host"
    components: tuple[Component, ...]
    engine: dict[str, Any]  # the backend settings the plan chose
    merge_seconds: float | None
    swap_seconds: float | None
    notes: tuple[str, ...] = ()

    def total(self, where: str, peak: bool = True) -> int:
        return sum(c.bytes for c in self.components if c.where == where and (peak or not c.peak_only))


@dataclass(frozen=True)
class NodePlan:
    workers: tuple[WorkerPlan, ...]
    host_memory: int
    gpu_memory: int | None

    @property
    def host_peak(self) -> int:
        return sum(w.total("host") for w in self.workers)


@dataclass(frozen=True)
class MemoryPlan:
    backend: str
    methods: tuple[str, ...]
    inputs: tuple[ModelFacts, ...]
    nodes: tuple[NodePlan, ...]
    refusal: str | None = None

    @property
    def fits(self) -> bool:
        return self.refusal is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fits"] = self.fits
        for node, plan_node in zip(data["nodes"], self.nodes):
            node["host_peak"] = plan_node.host_peak
            for w, pw in zip(node["workers"], plan_node.workers):
                w["host_resident"], w["host_peak"] = pw.total("host", False), pw.total("host")
                w["gpu_resident"], w["gpu_peak"] = pw.total("gpu", False), pw.total("gpu")
        return data


@dataclass(frozen=True)
class PlanRequest:
    base: str | None
    models: tuple[str, ...]
    methods: tuple[str, ...]
    backend: str = "hf"  # hf | vllm
    engine_dtype: str | None = None  # None: float32 on CPU, bfloat16 on GPU (both backends)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    gpus: int = 0  # GPUs per node (one worker each); 0: CPU workers
    cpu_workers: int = 1
    gpu_memory: int = 80 * GiB
    host_memory: int = 512 * GiB
    placement: Placement = "auto"


def _engine(req: PlanRequest, facts: ModelFacts, on_gpu: bool, budget: int | None) -> tuple[list[Component], dict]:
    """The engine's weights and KV cache, and the settings that make them fit `budget` bytes (GPU)."""
    where = "gpu" if on_gpu else "host"
    dtype = req.engine_dtype or ("bfloat16" if on_gpu else "float32")
    dbytes = DTYPE_BYTES[dtype]
    weights = facts.parameters * dbytes
    opts = dict(req.engine_options)
    comps = [Component("engine weights", weights, where)]
    if req.backend == "hf":
        seqs = int(opts.get("batch_size", DEFAULT_HF_BATCH_SIZE))
        length = int(opts.get("max_model_len", facts.max_positions))
        kv = kv_cache_bytes(facts.layers, facts.kv_heads, facts.head_dim, dbytes, length, seqs)
        comps.append(Component("kv cache (upper bound)", kv, where, peak_only=True))
        return comps, {"backend": "hf", "dtype": dtype, "batch_size": seqs, "max_len_bound": length}
    length = int(opts.get("max_model_len", facts.max_positions))
    if not on_gpu:
        kv = int(float(opts["kv_cache_gib"]) * GiB) if "kv_cache_gib" in opts else DEFAULT_CPU_KV_CACHE_BYTES
        comps.append(Component("kv cache", kv, where))
        return comps, {"backend": "vllm", "dtype": dtype, "max_model_len": length, "kv_cache_bytes": kv}
    per_seq = kv_cache_bytes(facts.layers, facts.kv_heads, facts.head_dim, dbytes, length, 1)
    if "max_num_seqs" in opts:
        seqs = int(opts["max_num_seqs"])
    else:  # the most sequences (up to vLLM's default) whose full-length KV fits what is left
        room = (budget or 0) - weights - ENGINE_RESERVE_BYTES
        seqs = min(DEFAULT_MAX_NUM_SEQS, max(1, room // per_seq)) if room > 0 else 1
        seqs = 2 ** int(math.log2(seqs))
    kv = per_seq * seqs
    comps += [Component("kv cache", kv, "gpu"), Component("engine reserve (assumed)", ENGINE_RESERVE_BYTES, "gpu")]
    util = math.ceil((weights + kv + ENGINE_RESERVE_BYTES) / req.gpu_memory * 100) / 100
    return comps, {"backend": "vllm", "dtype": dtype, "max_model_len": length, "max_num_seqs": seqs,
                   "gpu_memory_utilization": util, "enforce_eager": False}


def _worker(req: PlanRequest, facts: ModelFacts, n_models: int, name: str, on_gpu: bool, placement: str) -> WorkerPlan:
    inputs = facts.stored_bytes * (n_models + (1 if req.base is not None else 0))
    ws = workspace_bytes(n_models, facts.max_float_numel)
    temps = merge_temporaries_bytes(req.methods, facts.max_float_numel)
    where = "gpu" if on_gpu and placement == "gpu" else "host"
    comps = [Component("runtime", RUNTIME_BYTES, "host")]
    notes = []
    if on_gpu:
        comps.append(Component("cuda context (assumed)", CUDA_CONTEXT_BYTES, "gpu"))
    comps += [Component("inputs", inputs, where), Component("workspace", ws, where),
              Component("merge temporaries", temps, where, peak_only=True)]
    used_gpu = sum(c.bytes for c in comps if c.where == "gpu")
    engine, settings = _engine(req, facts, on_gpu, req.gpu_memory - used_gpu if on_gpu else None)
    comps += engine
    if on_gpu and placement == "host":
        notes.append("inputs on the host: merge on the CPU and copy into the engine (issue 13 §2; not yet wired "
                     "into the search workers, which put inputs on their device)")
    merge_s = swap_s = None
    if not on_gpu or placement == "host":
        merge_s = merge_seconds_cpu(req.methods, facts.parameters)
    if not on_gpu:
        swap_s = SWAP_SECONDS_PER_BYTE_CPU * facts.parameters * DTYPE_BYTES[facts.dtype]
    if on_gpu:
        notes.append("GPU merge and swap times are not measured (benchmarks/gpu_check.py will measure them)")
    return WorkerPlan(name, "cuda" if on_gpu else "cpu", where, tuple(comps), settings, merge_s, swap_s, tuple(notes))


def build_plan(req: PlanRequest) -> MemoryPlan:
    """The plan for one node (every node of a multi-node run is alike); refused when it cannot fit."""
    paths = ([req.base] if req.base is not None else []) + list(req.models)
    facts = tuple(ModelFacts.from_checkpoint(p) for p in paths)
    ref = facts[0]
    on_gpu = req.gpus > 0
    count = req.gpus if on_gpu else req.cpu_workers
    placements = ["gpu", "host"] if req.placement == "auto" else ["gpu" if req.placement == "device" else "host"]
    if not on_gpu:
        placements = ["host"]
    refusal = None
    for placement in placements:
        worker = _worker(req, ref, len(req.models), "worker-0", on_gpu, placement)
        refusal = _refusal(req, worker, count)
        if refusal is None:
            break
    workers = tuple(WorkerPlan(f"worker-{i}", worker.device, worker.placement, worker.components, worker.engine,
                               worker.merge_seconds, worker.swap_seconds, worker.notes) for i in range(count))
    node = NodePlan(workers, req.host_memory, req.gpu_memory if on_gpu else None)
    return MemoryPlan(req.backend, tuple(req.methods), facts, (node,), refusal)


def _refusal(req: PlanRequest, w: WorkerPlan, count: int) -> str | None:
    gpu, host = w.total("gpu"), w.total("host") * count
    if w.device == "cuda" and gpu > req.gpu_memory:
        parts = ", ".join(f"{c.name} {fmt_bytes(c.bytes)}" for c in w.components if c.where == "gpu")
        fix = ("place the inputs on the host (--placement host)" if w.placement == "gpu"
               else "lower max_model_len or max_num_seqs, use a GPU with more memory, or fewer agents")
        return (f"one worker needs {fmt_bytes(gpu)} of GPU memory ({parts}) but a GPU has "
                f"{fmt_bytes(req.gpu_memory)}: {fix}")
    if host > req.host_memory:
        return (f"{count} worker(s) need {fmt_bytes(host)} of host memory ({fmt_bytes(w.total('host'))} each) but "
                f"the node has {fmt_bytes(req.host_memory)}: use {max(0, req.host_memory // max(1, w.total('host')))} "
                "worker(s) or fewer, or a node with more memory")
    return None


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def format_plan(plan: MemoryPlan) -> str:
    lines = [f"inputs: {len(plan.inputs)} checkpoint(s) of {plan.inputs[0].parameters:,} parameters "
             f"({plan.inputs[0].dtype}, {fmt_bytes(plan.inputs[0].stored_bytes)} each); methods: {', '.join(plan.methods)}"]
    for i, node in enumerate(plan.nodes):
        gpu = f", GPU {fmt_bytes(node.gpu_memory)} each" if node.gpu_memory else ""
        lines.append(f"node {i}: {len(node.workers)} worker(s), host {fmt_bytes(node.host_memory)}{gpu}; "
                     f"host peak {fmt_bytes(node.host_peak)}")
        for w in node.workers:
            lines.append(f"  {w.name} ({w.device}, inputs on the {w.placement}):")
            for c in w.components:
                lines.append(f"    {c.name:<26} {fmt_bytes(c.bytes):>12}  {c.where}{'  (peak only)' if c.peak_only else ''}")
            for where in ("gpu", "host"):
                if any(c.where == where for c in w.components):
                    lines.append(f"    {where + ' resident / peak':<26} {fmt_bytes(w.total(where, False)):>12} / "
                                 f"{fmt_bytes(w.total(where))}")
            lines.append("    engine: " + ", ".join(f"{k}={v}" for k, v in w.engine.items()))
            merge = "not measured" if w.merge_seconds is None else f"{w.merge_seconds:.1f} s"
            swap = "not measured" if w.swap_seconds is None else f"{w.swap_seconds:.1f} s"
            lines.append(f"    one merge + swap: merge {merge}, swap {swap} (CPU costs measured under contention)")
            lines.extend(f"    note: {n}" for n in w.notes)
            if len(node.workers) > 2 and w is node.workers[0]:
                lines.append(f"  ... and {len(node.workers) - 1} identical worker(s)")
                break
    lines.append("fits" if plan.fits else f"does not fit: {plan.refusal}")
    return "\n".join(lines)
