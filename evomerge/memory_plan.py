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

Placement (where a worker's ResidentMerger keeps the inputs; evomerge/resident.py):
  device       private copies on the worker's device (GPU memory on a GPU worker, host memory on a CPU one)
  host_mapped  memory maps of the safetensors files: the kernel's page cache, ONE copy per node shared by
               every worker that maps the same files (on a GPU, blocks go through a pinned staging buffer)
  compact      the base plus, per agent, a bitmask and the changed values: (1/8 + itemsize x density) bytes
               per entry; the densities must be given (no task-vector statistics are cached today), else
               the plan bounds them at 1 and says so
`auto` takes `device` when the inputs fit beside the engine (on the GPU, or in the host memory of a CPU
node) and `host_mapped` otherwise; compact only when asked for.

The workspace is bounded by `workspace_bytes` (ResidentMerger's row blocks) when every rule the experiment
can produce is row-blockable (asked of the method registry, `MethodSpec.row_blockable`); otherwise a
whole-tensor rule grows it to (agents + 1) float32 rows of the largest tensor, and a search keeps it so.
A plan that cannot fit is refused with one line saying what to change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from evomerge.errors import EvomergeError

# ResidentMerger's row-block bound when an experiment leaves `workers.workspace_mib` at auto: on a GPU, blocks
# large enough to keep its kernels busy; on a CPU, small blocks that keep each worker's private memory small
# (two CPU workers on the 0.5B fixture held 1.43x one worker's memory with 512 MiB blocks, 1.32x with 128 MiB:
# docs/scale.md). 32 MiB merged the 0.5B fixture fastest (host_mapped task arithmetic, one process, 3 rounds:
# 16 MiB 1.85-1.89 s, 32 MiB 1.63-1.70, 64 MiB 1.66-1.73, 128 MiB 1.77-2.00).
AUTO_WORKSPACE_BYTES = {"cuda": 512 * 2**20, "cpu": 32 * 2**20}


def mib_to_bytes(mib: "int | None | str") -> "int | None | str":
    """A `workers.workspace_mib` setting in bytes ('auto' and None as they are)."""
    return mib if mib is None or mib == "auto" else int(mib) * 2**20


def workspace_bound(setting: "int | None | str", device_type: str) -> int | None:
    """The row-block bound in bytes for a `workspace_bytes` setting: a number, None (whole tensors) or
    'auto' (AUTO_WORKSPACE_BYTES by the device's type)."""
    if setting == "auto":
        return AUTO_WORKSPACE_BYTES["cuda" if device_type == "cuda" else "cpu"]
    return setting

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
Placement = Literal["auto", "device", "host_mapped", "compact"]
PLACEMENTS = ("device", "host_mapped", "compact")  # what a worker really runs (auto resolves to one)


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
# compact inputs unpack the mask and scatter the values every merge: 17.4 / 19.2 s against host_mapped's 6.8 / 8.1 s,
# alternating in one process on a 166M-parameter bf16 set (notes/resident.md; contended), about 2.5x
COMPACT_MERGE_FACTOR = 2.5
# host_mapped row blocks and mapped inputs: no measurable merge-time cost against private copies (same notes)
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
    tensors: int = 0  # stored tensors (compact keeps a prefix count per 4096 entries of each)

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
                   max((t.numel for t in floats), default=0), **facts, tensors=len(ckpt.tensors))


# -- pure arithmetic ------------------------------------------------------------------------------


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int, max_model_len: int,
                   max_num_seqs: int) -> int:
    """K and V of every layer for max_num_seqs sequences of max_model_len tokens."""
    return layers * kv_heads * head_dim * 2 * dtype_bytes * max_model_len * max_num_seqs


def workspace_numel(n_models: int, max_float_numel: int, bound: int | None = None, blockable: bool = False) -> int:
    """Entries of one operand row of ResidentMerger's float32 workspace. Row blocks of at most `bound` operand
    bytes when every rule is row-blockable (ResidentMerger sizes it min(largest, bound / (4 (agents + 1))));
    the largest tensor when there is no bound or some rule merges whole tensors (the workspace grows to the
    largest tensor the first time such a rule merges it, and a search keeps merging it)."""
    if bound is None or not blockable:
        return max_float_numel
    return min(max_float_numel, max(bound // (4 * (n_models + 1)), 1))


def workspace_bytes(n_models: int, max_float_numel: int, bound: int | None = None, blockable: bool = False) -> int:
    """ResidentMerger(keep='native')'s Workspace: base row + one row per model, float32."""
    return (n_models + 1) * workspace_numel(n_models, max_float_numel, bound, blockable) * 4


def merge_temporaries_bytes(methods: Sequence[str], max_float_numel: int, block_numel: int | None = None,
                            out_bytes: int = 2) -> int:
    """The largest method's peak temporaries while the largest tensor is merged. Whole tensors: k float32
    copies of it (k measured, including the float32 result and its cast to bf16, half a copy). In row blocks:
    the method's temporaries and float32 result per block (k - 1/2 copies of a block) plus the whole merged
    tensor assembled in the output dtype (`out_bytes` per entry); equal to the whole-tensor figure when one
    block is the whole tensor and the output is bf16."""
    # a method without a measured cost (a plugin) is given the largest measured one; the plan says so
    k = max(MERGE_TEMPORARIES.get(m, max(MERGE_TEMPORARIES.values())) for m in methods)
    if block_numel is None or block_numel >= max_float_numel:
        return math.ceil(k * max_float_numel * 4)
    return math.ceil((k - 0.5) * block_numel * 4) + max_float_numel * out_bytes


def compact_agent_bytes(parameters: int, tensors: int, itemsize: int, density: float) -> int:
    """One agent in CompactStore: a bitmask (1 bit per entry, rounded up per tensor), the changed entries'
    values in the stored dtype, and an 8-byte prefix count per 4096 entries (+1 per tensor, rounded up)."""
    mask = parameters // 8 + tensors
    prefix = 8 * (parameters // 4096 + 2 * tensors)
    return mask + prefix + math.ceil(density * parameters) * itemsize


def node_host_bytes(shared: int, private_per_worker: int, workers: int) -> int:
    """Host memory of a node: what every worker shares (mapped inputs: the page cache, once) + private parts."""
    return shared + workers * private_per_worker


def merge_seconds_cpu(methods: Sequence[str], parameters: int, placement: str = "device") -> float:
    factor = COMPACT_MERGE_FACTOR if placement == "compact" else 1.0
    slowest = max(MERGE_SECONDS_PER_PARAMETER_CPU.values())
    return max(MERGE_SECONDS_PER_PARAMETER_CPU.get(m, slowest) for m in methods) * parameters * factor


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    where: str  # "host" or "gpu"
    peak_only: bool = False  # allocated only while a merge runs
    shared: bool = False  # one copy per node, shared by every worker (mapped inputs in the page cache)


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    device: str  # "cpu" or "cuda"
    placement: str  # ResidentMerger's placement of the inputs: device | host_mapped | compact
    components: tuple[Component, ...]
    engine: dict[str, Any]  # the backend settings the plan chose
    merge_seconds: float | None
    swap_seconds: float | None
    notes: tuple[str, ...] = ()
    workspace_bound: int | None = None  # ResidentMerger's workspace_bytes (None: whole tensors)

    def total(self, where: str, peak: bool = True, shared: bool = True) -> int:
        """Bytes on `where`; `shared=False` leaves out what the node's workers share (counted once per node)."""
        return sum(c.bytes for c in self.components
                   if c.where == where and (peak or not c.peak_only) and (shared or not c.shared))

    @property
    def inputs_where(self) -> str:
        """Where the inputs live: the GPU, private host memory, or the node's shared page cache."""
        inputs = next(c for c in self.components if c.name.startswith("inputs"))
        if inputs.shared:
            return "node page cache (shared)"
        return "GPU memory" if inputs.where == "gpu" else "host memory (private)"


@dataclass(frozen=True)
class NodePlan:
    workers: tuple[WorkerPlan, ...]
    host_memory: int
    gpu_memory: int | None

    @property
    def host_shared(self) -> int:
        """Shared host bytes, once for the node (every worker maps the same files)."""
        return self.workers[0].total("host") - self.workers[0].total("host", shared=False) if self.workers else 0

    @property
    def host_peak(self) -> int:
        return self.host_shared + sum(w.total("host", shared=False) for w in self.workers)


@dataclass(frozen=True)
class MemoryPlan:
    backend: str
    methods: tuple[str, ...]
    inputs: tuple[ModelFacts, ...]
    nodes: tuple[NodePlan, ...]
    refusal: str | None = None
    whole_tensor_methods: tuple[str, ...] = ()  # methods whose rules (some of them) merge whole tensors
    densities: tuple[float, ...] | None = None  # agents' densities used for compact (None: unknown)

    @property
    def fits(self) -> bool:
        return self.refusal is None

    @property
    def placement(self) -> str:
        return self.nodes[0].workers[0].placement

    @property
    def workspace_bound(self) -> int | None:
        return self.nodes[0].workers[0].workspace_bound

    def summary(self) -> str:
        """One line: what the workers run with and whether it fits (the search logs it)."""
        node = self.nodes[0]
        w = node.workers[0]
        ws = next(c.bytes for c in w.components if c.name == "workspace")
        gpu = f", GPU {fmt_bytes(w.total('gpu'))} of {fmt_bytes(node.gpu_memory)} each" if node.gpu_memory else ""
        engine = ", ".join(f"{k}={v}" for k, v in w.engine.items() if k != "backend")
        verdict = "fits" if self.fits else f"does not fit: {self.refusal}"
        return (f"{len(node.workers)} {w.device} worker(s), placement {w.placement} (inputs: {w.inputs_where}), "
                f"workspace {fmt_bytes(ws)}; host peak {fmt_bytes(node.host_peak)} of {fmt_bytes(node.host_memory)}"
                f"{gpu}; engine {w.engine.get('backend')}: {engine}; {verdict}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fits"] = self.fits
        for node, plan_node in zip(data["nodes"], self.nodes):
            node["host_peak"], node["host_shared"] = plan_node.host_peak, plan_node.host_shared
            for w, pw in zip(node["workers"], plan_node.workers):
                w["host_resident"], w["host_peak"] = pw.total("host", False), pw.total("host")
                w["host_private_peak"] = pw.total("host", shared=False)
                w["gpu_resident"], w["gpu_peak"] = pw.total("gpu", False), pw.total("gpu")
                w["inputs_where"] = pw.inputs_where
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
    workspace_bytes: int | None | Literal["auto"] = "auto"  # ResidentMerger's row-block bound (None: whole tensors)
    # method -> every rule of it the experiment can produce is row-blockable (the method registry's answer,
    # evomerge.plan_rules); a method not named is taken as merging whole tensors (the safe bound)
    row_blockable: Mapping[str, bool] = field(default_factory=dict)
    densities: tuple[float, ...] | None = None  # each agent's share of changed entries, for compact; None: unknown
    output_dtype_bytes: int = 2  # the merged tensors' dtype (bf16 for the paper's agents)


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
    settings = {"backend": "vllm", "dtype": dtype, "max_model_len": length, "max_num_seqs": seqs,
                "gpu_memory_utilization": util, "enforce_eager": False}
    for key in ("gpu_memory_utilization", "enforce_eager"):  # the user's own settings are kept
        if key in opts:
            settings[key] = opts[key]
    return comps, settings


def _inputs(req: PlanRequest, facts: ModelFacts, n_models: int, placement: str, merge_where: str) -> list[Component]:
    """Where and how large the inputs are for one placement (ResidentMerger.memory_bytes())."""
    with_base = 1 if req.base is not None else 0
    if placement == "host_mapped":
        return [Component("inputs (mapped files)", facts.stored_bytes * (n_models + with_base), "host", shared=True)]
    if placement == "compact":
        itemsize = DTYPE_BYTES[facts.dtype]
        densities = req.densities if req.densities is not None else (1.0,) * n_models
        agents = sum(compact_agent_bytes(facts.parameters, facts.tensors, itemsize, d) for d in densities)
        return [Component("inputs (compact)", facts.stored_bytes * with_base + agents, merge_where)]
    return [Component("inputs", facts.stored_bytes * (n_models + with_base), merge_where)]


def _worker(req: PlanRequest, facts: ModelFacts, n_models: int, name: str, on_gpu: bool, placement: str) -> WorkerPlan:
    merge_where = "gpu" if on_gpu else "host"
    blockable = bool(req.methods) and all(req.row_blockable.get(m, False) for m in req.methods)
    bound = workspace_bound(req.workspace_bytes, "cuda" if on_gpu else "cpu")
    ws_numel = workspace_numel(n_models, facts.max_float_numel, bound, blockable)
    ws = (n_models + 1) * ws_numel * 4
    temps = merge_temporaries_bytes(req.methods, facts.max_float_numel, ws_numel, req.output_dtype_bytes)
    comps = [Component("runtime", RUNTIME_BYTES, "host")]
    notes = []
    if on_gpu:
        comps.append(Component("cuda context (assumed)", CUDA_CONTEXT_BYTES, "gpu"))
    comps += _inputs(req, facts, n_models, placement, merge_where)
    if on_gpu and placement == "host_mapped":  # blocks travel through one pinned buffer (one operand row)
        comps.append(Component("pinned staging", ws_numel * DTYPE_BYTES[facts.dtype], "host"))
    comps += [Component("workspace", ws, merge_where),
              Component("merge temporaries", temps, merge_where, peak_only=True)]
    used_gpu = sum(c.bytes for c in comps if c.where == "gpu")
    engine, settings = _engine(req, facts, on_gpu, req.gpu_memory - used_gpu if on_gpu else None)
    comps += engine
    unmeasured = sorted(set(req.methods) - set(MERGE_TEMPORARIES))
    if unmeasured:
        notes.append(f"no measured merge cost for {', '.join(unmeasured)}: the largest measured one is assumed "
                     "(benchmarks/plan_calibrate.py measures it)")
    if placement == "compact" and req.densities is None:
        notes.append("agent densities unknown (no cached task-vector statistics): compact inputs bounded at "
                     "density 1; give the measured densities (evomerge analyze) for a real figure")
    if on_gpu and placement == "host_mapped":
        notes.append("inputs mapped on the host, merged on the GPU in row blocks and streamed into the engine")
    merge_s = swap_s = None
    if not on_gpu:
        merge_s = merge_seconds_cpu(req.methods, facts.parameters, placement)
        swap_s = SWAP_SECONDS_PER_BYTE_CPU * facts.parameters * DTYPE_BYTES[facts.dtype]
    else:
        notes.append("GPU merge and swap times are not measured (benchmarks/gpu_check.py will measure them)")
    return WorkerPlan(name, "cuda" if on_gpu else "cpu", placement, tuple(comps), settings, merge_s, swap_s,
                      tuple(notes), bound)


def build_plan(req: PlanRequest) -> MemoryPlan:
    """The plan for one node (every node of a multi-node run is alike); refused when it cannot fit.
    `auto` tries private copies on the worker's device first, then the node-shared mapped files."""
    paths = ([req.base] if req.base is not None else []) + list(req.models)
    facts = tuple(ModelFacts.from_checkpoint(p) for p in paths)
    ref = facts[0]
    on_gpu = req.gpus > 0
    count = req.gpus if on_gpu else req.cpu_workers
    placements = ["device", "host_mapped"] if req.placement == "auto" else [req.placement]
    if placements[0] not in PLACEMENTS:
        raise EvomergeError(f"placement must be auto or one of {', '.join(PLACEMENTS)}, got {req.placement!r}")
    tried = []
    for placement in placements:
        worker = _worker(req, ref, len(req.models), "worker-0", on_gpu, placement)
        tried.append((worker, _refusal(req, worker, count)))
    worker, refusal = _choose(tried)
    workers = tuple(replace(worker, name=f"worker-{i}") for i in range(count))
    node = NodePlan(workers, req.host_memory, req.gpu_memory if on_gpu else None)
    whole = tuple(m for m in req.methods if not req.row_blockable.get(m, False))
    return MemoryPlan(req.backend, tuple(req.methods), facts, (node,), refusal, whole, req.densities)


def _choose(tried: list[tuple[WorkerPlan, str | None]]) -> tuple[WorkerPlan, str | None]:
    """The first placement that fits, unless it squeezes the engine: private copies on a GPU that leave vLLM
    fewer sequences than mapped inputs would are passed over (the inputs do not fit *beside* the engine)."""
    fitting = [(w, r) for w, r in tried if r is None]
    if not fitting:
        return tried[-1]
    first = fitting[0]
    seqs = [w.engine.get("max_num_seqs", 0) for w, _ in fitting]
    if len(fitting) > 1 and seqs[0] < max(seqs):
        best = fitting[seqs.index(max(seqs))]
        note = (f"placement {first[0].placement} would fit but leave the engine max_num_seqs={seqs[0]} "
                f"instead of {max(seqs)}")
        return replace(best[0], notes=(note, *best[0].notes)), None
    return first


def _refusal(req: PlanRequest, w: WorkerPlan, count: int) -> str | None:
    gpu = w.total("gpu")
    shared, private = w.total("host") - w.total("host", shared=False), w.total("host", shared=False)
    host = node_host_bytes(shared, private, count)
    ws = next(c.bytes for c in w.components if c.name == "workspace")
    whole = [m for m in req.methods if not req.row_blockable.get(m, False)]
    ws_hint = (f"; the workspace ({fmt_bytes(ws)}) holds whole tensors for {', '.join(whole)} (not row-blockable "
               "at some of their parameters): without them it is bounded by workers.workspace_mib"
               if whole and ws > GiB else "")
    if w.device == "cuda" and gpu > req.gpu_memory:
        parts = ", ".join(f"{c.name} {fmt_bytes(c.bytes)}" for c in w.components if c.where == "gpu")
        fix = ("use placement host_mapped (inputs in the node's page cache, merged in row blocks on the GPU)"
               if w.placement != "host_mapped"
               else "lower max_model_len or max_num_seqs, use a GPU with more memory, or fewer agents")
        return (f"one worker needs {fmt_bytes(gpu)} of GPU memory ({parts}) but a GPU has "
                f"{fmt_bytes(req.gpu_memory)}: {fix}{ws_hint}")
    if host > req.host_memory:
        fit = max(0, (req.host_memory - shared) // max(1, private))
        mapped = (", placement host_mapped (one copy of the inputs per node)" if w.placement != "host_mapped" else "")
        split = f"{fmt_bytes(shared)} shared + {fmt_bytes(private)} each" if shared else f"{fmt_bytes(private)} each"
        fix = (f"use {fit} worker(s) or fewer{mapped}, or a node with more memory" if fit
               else f"not even one worker fits: use a node with more memory{mapped if count > 1 else ''}")
        return (f"{count} worker(s) need {fmt_bytes(host)} of host memory ({split}) but the node has "
                f"{fmt_bytes(req.host_memory)}: {fix}{ws_hint if w.device == 'cpu' else ''}")
    return None


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def format_plan(plan: MemoryPlan) -> str:
    lines = [f"inputs: {len(plan.inputs)} checkpoint(s) of {plan.inputs[0].parameters:,} parameters "
             f"({plan.inputs[0].dtype}, {fmt_bytes(plan.inputs[0].stored_bytes)} each); methods: {', '.join(plan.methods)}"]
    bound = plan.workspace_bound
    if plan.whole_tensor_methods:
        lines.append(f"whole-tensor rules (not row-blockable): {', '.join(plan.whole_tensor_methods)}: the workspace "
                     "holds (agents + 1) float32 rows of the largest tensor")
    else:
        lines.append("every rule is row-blockable: the workspace is bounded by "
                     + ("nothing (workspace_mib: none)" if bound is None else fmt_bytes(bound)))
    for i, node in enumerate(plan.nodes):
        gpu = f", GPU {fmt_bytes(node.gpu_memory)} each" if node.gpu_memory else ""
        shared = f" (of which {fmt_bytes(node.host_shared)} shared by every worker, once)" if node.host_shared else ""
        lines.append(f"node {i}: {len(node.workers)} worker(s), host {fmt_bytes(node.host_memory)}{gpu}; "
                     f"host peak {fmt_bytes(node.host_peak)}{shared}")
        for w in node.workers:
            lines.append(f"  {w.name} ({w.device}, placement {w.placement}: inputs in {w.inputs_where}):")
            for c in w.components:
                tags = ("  (peak only)" if c.peak_only else "") + ("  (shared per node)" if c.shared else "")
                lines.append(f"    {c.name:<26} {fmt_bytes(c.bytes):>12}  {c.where}{tags}")
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
