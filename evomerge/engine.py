"""Execute a MergeRecipe tensor by tensor: one merge path, two sinks.

    source (checkpoints on disk, lazily | ResidentMerger: inputs held on a device)
        -> operands(name): base and task vectors of one tensor, float32, on the device
        -> merge_tensor: the rule's method (`spec.merge`) with a per-tensor seed and, for RAM+,
           the whole-model overlap statistics
        -> sink: ShardWriter (merge_to_disk) | dict (merge_state_dict) | live module (merge_into)

`merge_to_disk` (here) and `ResidentMerger` (evomerge.resident) share `evomerge.row_blocks.merged_blocks`
(which calls `merge_tensor` per tensor or row block), so a recipe gives the same tensors whichever sink
receives them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from evomerge.errors import CheckpointError, EvomergeError, RecipeError
from evomerge.io.staging import staged_output_dir
from evomerge.io.provenance import RECIPE_FILE, load_recipe_file, write_merge_metadata  # noqa: F401 (re-exported)
from evomerge.io.reader import CheckpointSet, check_finite
from evomerge.io.safetensors_format import OUTPUT_DTYPES
from evomerge.io.writer import PlannedTensor, ShardPlan, ShardWriter, parse_size
from evomerge.memory_plan import workspace_numel
from evomerge.recipe import MergeRecipe, MergeRule
from evomerge.io.staging import refuse_output_over_inputs

if TYPE_CHECKING:
    import torch

    from evomerge.methods.spec import GlobalOverlap

log = logging.getLogger(__name__)


def output_dtype(requested: str | None, recipe: MergeRecipe, inputs_dtype: str) -> str:
    """The dtype merged float tensors are stored in: the caller's, else the recipe's, else the inputs'."""
    out_dtype = requested or recipe.dtype or inputs_dtype
    if out_dtype not in OUTPUT_DTYPES:
        raise RecipeError(f"output dtype {out_dtype!r}: use one of {', '.join(OUTPUT_DTYPES)}")
    return out_dtype


def tensor_seed(recipe_seed: int, tensor_name: str) -> int:
    """A seed for one tensor: stable across processes and Python versions (unlike salted hash()),
    and independent of the order tensors are merged in."""
    digest = hashlib.sha256(f"{recipe_seed}\x00{tensor_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(device: "str | torch.device | None") -> "torch.device":
    """None/'auto' -> cuda when available, else cpu. Asking for cuda without one is an error."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvomergeError(f"device {device!r} requested but torch sees no CUDA GPU; use --device cpu")
    return dev


# -- sources ------------------------------------------------------------------------------------


class TensorSource(Protocol):
    """What the merge path needs from its inputs."""

    tensor_names: list[str]
    fingerprint: tuple[str, ...]  # identifies the inputs (statistics cache key)

    def is_float(self, name: str) -> bool: ...

    def operands(self, name: str) -> "tuple[torch.Tensor, list[torch.Tensor]]":
        """(base, task vectors) of one tensor, float32 on the device, valid until the next call.
        Without a base: zeros and the weights."""
        ...

    def passthrough(self, name: str) -> "torch.Tensor":
        """A non-float tensor (e.g. an integer buffer), copied from the base unchanged."""
        ...


class Workspace:
    """Float32 operands of one tensor (row 0 the base, row t the task vector of model t), in one
    buffer reused from tensor to tensor.

    Sized once to the largest tensor: that is the engine's (inputs + 1) x largest-tensor memory.
    Reuse spares a page fault per 4 KiB of every operand of every tensor (on a CPU a fresh 100 MB
    tensor costs about as much as the arithmetic done on it), and one stacked buffer lets the
    finiteness check and the subtraction run as one kernel for all models, not one per model.
    """

    def __init__(self, n_rows: int, max_numel: int, device: "torch.device", staging_bytes: int = 0):
        import torch

        self.device = device
        self._stack = torch.empty((n_rows, max_numel), dtype=torch.float32, device=device)
        self.numel = max_numel
        self.base_zeroed = False  # row 0 holds zeros (set by a source whose inputs have no base)
        # reads land here before conversion to float32: on the CPU whatever the device (pinned for a GPU)
        self.staging = torch.empty(staging_bytes, dtype=torch.uint8, pin_memory=device.type == "cuda")

    def rows(self, numel: int) -> "torch.Tensor":
        """The (n_rows, numel) view that holds one tensor's operands."""
        return self._stack[:, :numel]


def _finish_operands(
    rows: "torch.Tensor", shape, name: str, files: Sequence, check: bool = True,
) -> "tuple[torch.Tensor, list[torch.Tensor]]":
    """Rows hold the float32 base (or zeros: `files[0]` is None) and the models' weights: check them, turn
    weights into task vectors τ_t = θ_t − θ_base in place, return (base, [τ_t]) shaped like the tensor.

    Finiteness is checked on the float32 copies (one sum for all of them; a float32 sum is fast
    where a bf16 one is not, and the copy holds exactly the stored NaN/inf); `files[i]` names row i's
    file when a row is at fault (None: zeros, never at fault). Without a base the weights already are
    the task vectors (x - 0 is x, bit for bit, -0 and NaN included): the zero row is neither summed
    nor subtracted, two passes fewer (a fifth of a base-less linear merge's time at 0.5B).
    `check=False`: the caller checks the merged tensor instead (`MethodSpec.nonfinite_propagates`) and
    calls `CheckpointSource.check_operands` when that is not finite.
    """
    has_base = files[0] is not None
    if check:
        _check_rows(rows if has_base else rows[1:], name, files if has_base else files[1:])
    if has_base:
        rows[1:].sub_(rows[:1])
    return rows[0].view(shape), [row.view(shape) for row in rows[1:]]


def _check_rows(rows: "torch.Tensor", name: str, files: Sequence) -> None:
    """Raise CheckpointError naming the file of the first row holding a NaN or inf (one sum for all rows;
    a row by row search only when that is not finite)."""
    import torch

    if not torch.isfinite(rows.sum()):
        for row, file in zip(rows, files):
            if file is not None:
                check_finite(row, file, name)


class CheckpointSource:
    """Reads operands lazily from checkpoint files, one tensor or one row block at a time, into a reused
    workspace (a TensorSource, and a BlockSource for evomerge.row_blocks).

    `workspace_bytes` bounds the workspace when every tensor is read in row blocks that fit it; a whole
    tensor larger than it (a rule that cannot be blocked) grows the workspace to that tensor, once.
    None: sized to the largest tensor from the start (whole-tensor reads)."""

    def __init__(self, inputs: CheckpointSet, device: "torch.device", workspace_bytes: int | None = None):
        self.inputs = inputs
        self.device = device
        self.tensor_names = inputs.tensor_names
        self.fingerprint = inputs.fingerprint
        self.n_operands = len(inputs.models) + 1
        floats = [i for i in inputs.reference.tensors.values() if i.is_float]
        # one operand row: the largest tensor, or a row block of `workspace_bytes` (the memory plan's formula)
        numel = workspace_numel(len(inputs.models), max((i.numel for i in floats), default=0), workspace_bytes,
                                blockable=True)
        # a GPU's rows are filled through a pinned staging buffer; CPU rows straight from memory maps
        self._staging_bytes = 0 if device.type == "cpu" else max(
            (c.tensors[i.name].nbytes for c in inputs.all for i in floats), default=0)
        self.workspace = Workspace(self.n_operands, numel, device, staging_bytes=self._staging_bytes)

    def is_float(self, name: str) -> bool:
        return self.inputs.reference.tensors[name].is_float

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.inputs.reference.tensors[name].shape)

    def block_operands(self, name, rows, check_finite: bool = True):
        """(base, task vectors) of rows [start, stop) of one tensor (None: all of it), float32, checked
        finite (unless `check_finite=False`: then the caller checks the merge and calls `check_operands`
        when it is not finite), in the workspace: valid until the next call."""
        inputs = self.inputs
        shape = self.shape(name)
        if rows is None:
            span, block_shape = (0, inputs.reference.tensors[name].numel), shape
        else:
            per_row = inputs.reference.tensors[name].numel // max(shape[0], 1)
            span, block_shape = (rows[0] * per_row, rows[1] * per_row), (rows[1] - rows[0], *shape[1:])
        numel = span[1] - span[0]
        if numel > self.workspace.numel:  # a whole tensor whose rule cannot be blocked: grow, once
            self.workspace = None  # the old buffer is freed before the larger one is allocated
            self.workspace = Workspace(self.n_operands, numel, self.device, staging_bytes=self._staging_bytes)
        ws = self.workspace
        block = ws.rows(numel)
        sources = [inputs.base, *inputs.models]
        if inputs.base is None and not ws.base_zeroed:
            # once per buffer: no method writes its operands (resident inputs are passed the same way;
            # test_methods_registry's test_methods_return_float32_of_the_base_shape_and_leave_inputs_alone)
            ws.rows(ws.numel)[0].zero_()
            ws.base_zeroed = True
        for row, ckpt in zip(block, sources):
            if ckpt is None:
                continue
            elif row.device.type == "cpu":
                inputs.copy_into(ckpt, name, row, span)
            else:  # through the pinned staging buffer: a fast host-to-device copy
                row.copy_(inputs.read(ckpt, name, finite=False, out=ws.staging, span=span))
        return _finish_operands(block, block_shape, name, self._files(name), check_finite)

    def _files(self, name: str) -> list:
        return [c.tensors[name].file if c is not None else None for c in [self.inputs.base, *self.inputs.models]]

    def check_operands(self, name, base, deltas) -> None:
        """After a merge from unchecked operands came out non-finite: name the input file that holds a
        NaN or inf (the operands as `block_operands` returned them, task vectors: a non-finite weight or
        base entry stays non-finite in them). Returns when they are all finite (the merge overflowed)."""
        for operand, file in zip([base, *deltas], self._files(name)):
            if file is not None:  # None: the zero base of a base-less recipe
                check_finite(operand, file, name)

    def operands(self, name):
        return self.block_operands(name, None)

    def passthrough(self, name):
        return self.inputs.read(self.inputs.reference, name, self.device)


# -- whole-model overlap statistics (RAM+ global rho) -------------------------------------------


def _needs_global_overlap(rule: MergeRule) -> float | None:
    """The epsilon at which this rule needs whole-model overlap counts, or None."""
    from evomerge.methods.registry import get_method

    spec = get_method(rule.method)
    if spec.global_overlap_param is None:
        return None
    # RAM+ with `rho_scope: tensor` counts within the tensor; no whole-model pass is needed
    if rule.parameters.get("rho_scope", "global") != "global":
        return None
    return float(rule.parameters[spec.global_overlap_param])


def count_global_overlap(
    source: TensorSource, epsilons: Iterable[float], progress: bool = False
) -> dict[float, "GlobalOverlap"]:
    """One pass over every float tensor, counting all requested epsilons at once (Eq. 2's counts)."""
    from tqdm.auto import tqdm

    from evomerge.taskvectors import overlap_counts

    epsilons = sorted(set(epsilons))
    totals = {}
    names = [n for n in source.tensor_names if source.is_float(n)]
    for name in tqdm(names, desc="overlap statistics", unit="tensor", disable=not progress, leave=False):
        _, deltas = source.operands(name)
        for eps in epsilons:
            counts = overlap_counts(deltas, eps)
            totals[eps] = counts if eps not in totals else totals[eps] + counts
        del deltas
    return {eps: counts.as_global_overlap(eps) for eps, counts in totals.items()}


class OverlapCache:
    """GlobalOverlap per (inputs, epsilon), computed once and reused (the search merges the same
    inputs hundreds of times with different recipes)."""

    def __init__(self, max_entries: int = 64):
        self._entries: dict[tuple[tuple[str, ...], float], "GlobalOverlap"] = {}
        self.max_entries = max_entries
        self.passes = 0  # number of statistics passes run (tests and logs)

    def get(
        self, source: TensorSource, epsilons: Iterable[float], progress: bool = False
    ) -> dict[float, "GlobalOverlap"]:
        wanted = {float(e) for e in epsilons}
        missing = [e for e in wanted if (source.fingerprint, e) not in self._entries]
        if missing:
            t0 = time.perf_counter()
            found = count_global_overlap(source, missing, progress)
            self.passes += 1
            log.info("overlap statistics for epsilon %s in %.1fs", sorted(missing), time.perf_counter() - t0)
            for eps, stats in found.items():
                if len(self._entries) >= self.max_entries:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[(source.fingerprint, eps)] = stats
        return {e: self._entries[(source.fingerprint, e)] for e in wanted}


DEFAULT_OVERLAP_CACHE = OverlapCache()


# -- the one merge path -------------------------------------------------------------------------


def merge_tensor(
    name: str, base: "torch.Tensor", deltas: Sequence["torch.Tensor"], rule: MergeRule, recipe_seed: int,
    overlaps: Mapping[float, "GlobalOverlap"], tensor_overlap: "GlobalOverlap | None" = None,
    offset: int = 0, statistics: Any = None,
) -> "torch.Tensor":
    """Merge one tensor with its rule's method; float32 result, same shape and device as `base`, never memory
    shared with the operands (they are reused workspace or resident inputs).

    Or one row block of it, starting at flat entry `offset`, with its whole tensor's `tensor_overlap`
    counts and `statistics` (the spec's `block_statistics`, gathered over the tensor's blocks first:
    evomerge/row_blocks.py). For a whole tensor the statistics are gathered here, by the same code, from
    the tensor as one block."""
    import torch

    from evomerge.methods.registry import get_method
    from evomerge.methods.spec import OneBlock, TensorContext

    spec = get_method(rule.method)
    eps = _needs_global_overlap(rule)
    overlap = overlaps[eps] if eps is not None else None
    if spec.block_statistics is not None and statistics is None:
        if offset:
            raise ValueError(f"tensor '{name}': a row block at offset {offset} needs its whole tensor's statistics "
                             f"(method '{rule.method}' has block_statistics)")
        statistics = spec.block_statistics(rule.parameters, base.numel(), OneBlock(tuple(deltas)))
    ctx = TensorContext(name=name, seed=tensor_seed(recipe_seed, name), global_overlap=overlap,
                        tensor_overlap=tensor_overlap, offset=offset, statistics=statistics)
    merged = spec.merge(base, deltas, rule.parameters, ctx)
    if merged.shape != base.shape or merged.dtype != torch.float32:
        raise RuntimeError(
            f"method '{rule.method}' returned {merged.dtype} {list(merged.shape)} for tensor '{name}' "
            f"(expected float32 {list(base.shape)}): a bug in the method"
        )
    storage = merged.untyped_storage().data_ptr()
    if any(storage == t.untyped_storage().data_ptr() for t in (base, *deltas)):  # e.g. `return base`
        merged = merged.clone()
    return merged


def _rules(recipe: MergeRecipe, names: Sequence[str]) -> dict[str, MergeRule]:
    return {n: recipe.rule_for(n) for n in names}


def _overlaps_for(recipe_rules: Mapping[str, MergeRule], source: TensorSource, cache: OverlapCache, progress: bool):
    epsilons = {e for r in recipe_rules.values() if (e := _needs_global_overlap(r)) is not None}
    return cache.get(source, epsilons, progress) if epsilons else {}


# -- sink 1: a Hugging Face checkpoint on disk --------------------------------------------------


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    files: tuple[str, ...]
    dtype: str
    tensors: int
    seconds: float


DISK_WORKSPACE_BYTES = 16 << 20
WRITE_CHUNK_BYTES = 4 << 20


def merge_to_disk(
    recipe: MergeRecipe,
    out_dir: str | Path,
    device: "str | torch.device | None" = "cpu",
    shard_size: str | int = "5GB",
    dtype: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    overlap_cache: OverlapCache | None = None,
    workspace_bytes: int | None = DISK_WORKSPACE_BYTES,
    threads: int | None = None,
) -> MergeResult:
    """Merge checkpoints as `recipe` says and write a Hugging Face checkpoint to `out_dir`.

    Every input is validated before anything is written; the output is built in a temporary
    sibling directory renamed at the end, so an error or Ctrl-C leaves no `out_dir`.
    `dtype` overrides the recipe's output dtype. Tensors whose rule allows it are merged in row blocks
    of at most `workspace_bytes` of float32 operands (evomerge.row_blocks; bit for bit the whole-tensor
    result): the operands of a block stay in the CPU's caches from the read to the write, and the
    workspace stays small. None: every tensor whole. On a CPU, `threads` (default: torch's thread count)
    threads merge blocks side by side, each operation single-threaded (`_block_workers`); the result is the
    same bytes for any count.
    """
    import torch
    from tqdm.auto import tqdm

    from evomerge.row_blocks import _BlocksAsTensors, merged_blocks

    t0 = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    refuse_output_over_inputs(out_dir, [recipe.base, *recipe.models])  # before --overwrite could replace one
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir}: already exists; choose another directory or pass --overwrite")
    if workspace_bytes is not None and workspace_bytes <= 0:
        raise ValueError(f"workspace_bytes must be positive or None, got {workspace_bytes}")
    max_shard = parse_size(shard_size)
    dev = resolve_device(device)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    threads = threads or torch.get_num_threads()
    workers = _block_workers(threads, dev, workspace_bytes)
    with CheckpointSet.open(recipe.base, recipe.models) as inputs:
        source = CheckpointSource(inputs, dev, workspace_bytes)
        # one more source (its own workspace) per block worker beyond the first
        helpers = [CheckpointSource(inputs, dev, workspace_bytes) for _ in range(workers - 1)]
        n_operands = source.n_operands
        block_bytes = workspace_bytes if workspace_bytes is not None else source.n_operands * 4 * max(
            (i.numel for i in inputs.reference.tensors.values()), default=1)
        rules = _rules(recipe, [n for n in source.tensor_names if source.is_float(n)])  # recipe errors first
        out_dtype = output_dtype(dtype, recipe, inputs.reference.dtype)
        plan = ShardPlan.build(
            [PlannedTensor(n, out_dtype if info.is_float else info.dtype, info.shape)
             for n, info in inputs.reference.tensors.items()],
            max_shard,
        )
        names = [t.name for t in plan.order]
        cache = overlap_cache if overlap_cache is not None else DEFAULT_OVERLAP_CACHE
        # statistics pass (if any) before the output exists; over the same blocks merged_blocks asks for
        _overlaps_for(rules, _BlocksAsTensors(source, block_bytes, n_operands), cache, progress)
        with staged_output_dir(out_dir, overwrite) as staging:
            writer = ShardWriter(staging, plan)
            torch_dtype = getattr(torch, out_dtype)
            behind = _WriteBehind(writer, torch_dtype, dev)
            bar = tqdm(total=len(names), desc="merging", unit="tensor", disable=not progress)
            try:
                for name, rows, merged in merged_blocks(source, recipe, cache, block_bytes, n_operands, names, helpers,
                                                        cast_to=torch_dtype):
                    behind.write(name, merged)
                    del merged
                    if rows is None or rows[1] == source.shape(name)[0]:
                        bar.update()
                behind.drain()
                files = writer.finish()
            finally:
                bar.close()
                behind.close()  # the helper thread is idle before the file is closed under it
                writer.abort()
            write_merge_metadata(staging, recipe, inputs, out_dtype, dev)
    result = MergeResult(out_dir, tuple(files), out_dtype, len(names), time.perf_counter() - t0)
    log.info("wrote %s: %d tensors in %d file(s), %s, %.1fs",
             out_dir, result.tensors, len(files), out_dtype, result.seconds)
    return result


MAX_BLOCK_WORKERS = 8


def _block_workers(threads: int, device: "torch.device", workspace_bytes: int | None) -> int:
    """How many threads merge row blocks side by side on a CPU: torch's thread budget (OMP_NUM_THREADS,
    torch.set_num_threads), each thread merging whole blocks single-threaded. Measured at 0.5B on 2 cores
    (the base-less linear merge in one process): 1.9 s with two block threads against 2.5 s with one, and
    about 2.5 s too with the two threads inside each operation instead (its memory-bound kernels gain little
    from a second core; whole blocks side by side keep each block's operands in one core's cache). A GPU runs
    one block at a time."""
    if device.type != "cpu" or workspace_bytes is None:
        return 1
    return max(1, min(threads, MAX_BLOCK_WORKERS))


class _WriteBehind:
    """Writes merged tensors (whole or row blocks) on a helper thread while the next ones merge: file
    writes overlap the arithmetic (torch and the write syscalls release the GIL). Each result is cast
    to the output dtype in chunks of at most WRITE_CHUNK_BYTES, into a few reused buffers (no allocation
    or page fault per tensor, and a chunk is still in the CPU cache when the writer copies it); a buffer
    is reused only once its previous write has finished. The writer's errors surface at the next
    `write` or at `drain`."""

    def __init__(self, writer: ShardWriter, dtype: "torch.dtype", device: "torch.device", slots: int = 3,
                 chunk_bytes: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        import torch

        self.writer = writer
        self.dtype = dtype
        chunk_bytes = WRITE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        self.chunk = max(chunk_bytes // torch.empty((), dtype=dtype).element_size(), 1)
        self.buffers = [torch.empty(self.chunk, dtype=dtype, pin_memory=device.type == "cuda")
                        for _ in range(slots)]
        self.pending: list = [None] * slots
        self.next = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="evomerge-write")  # one thread: the plan's order

    def write(self, name: str, merged: "torch.Tensor") -> None:
        if not merged.is_floating_point():  # a passthrough tensor: a fresh tensor of its own, written as is
            self._submit(self.writer.write, name, merged.cpu())
            return
        if merged.numel() == 0:
            self._submit(self.writer.write, name, merged.to(self.dtype).cpu())
            return
        flat = merged.reshape(-1)
        if merged.dtype == self.dtype and merged.device.type == "cpu":  # cast already: a fresh tensor, written as is
            self._submit(self.writer.write_part, name, flat)
            return
        for start in range(0, flat.numel(), self.chunk):
            part = flat[start:start + self.chunk]
            slot = self._free_slot()
            buffer = self.buffers[slot][: part.numel()]
            buffer.copy_(part)
            self.pending[slot] = self.pool.submit(self.writer.write_part, name, buffer)

    def _free_slot(self) -> int:
        slot = self.next
        self.next = (slot + 1) % len(self.buffers)
        if self.pending[slot] is not None:
            self.pending[slot].result()
            self.pending[slot] = None
        return slot

    def _submit(self, fn, *args) -> None:
        slot = self._free_slot()  # keeps the order of results and the bound on work in flight
        self.pending[slot] = self.pool.submit(fn, *args)

    def drain(self) -> None:
        for future in self.pending:
            if future is not None:
                future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def __getattr__(name: str):
    # ResidentMerger moved to evomerge.resident (it imports this module); kept reachable here for one release
    if name == "ResidentMerger":
        from evomerge.resident import ResidentMerger

        return ResidentMerger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
