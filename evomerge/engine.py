"""Execute a MergeRecipe tensor by tensor: one merge path, two sinks.

    source (checkpoints on disk, lazily | ResidentMerger: inputs held on a device)
        -> operands(name): base and task vectors of one tensor, float32, on the device
        -> merge_tensor: the rule's method (`spec.merge`) with a per-tensor seed and, for RAM+,
           the whole-model overlap statistics
        -> sink: ShardWriter (merge_to_disk) | dict (merge_state_dict) | live module (merge_into)

`merge_to_disk` and `ResidentMerger` share `_merged_tensors`, so a recipe gives the same tensors
whichever sink receives them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal, Mapping, Protocol, Sequence

import yaml

from evomerge.yamlio import load_yaml
from evomerge import __version__
from evomerge.checkpoint import (
    CONFIG_FILE, Checkpoint, CheckpointSet, PlannedTensor, ShardPlan, ShardWriter, check_finite,
    copy_side_files, parse_size, staged_output_dir, write_json,
)
from evomerge.errors import CheckpointError, EvomergeError, RecipeError
from evomerge.recipe import MergeRecipe, MergeRule
from evomerge.staging import refuse_output_over_inputs

if TYPE_CHECKING:
    import torch

    from evomerge.methods.spec import GlobalOverlap

log = logging.getLogger(__name__)

RECIPE_FILE = "merge_recipe.yaml"
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")


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
        # reads land here before conversion to float32: on the CPU whatever the device (pinned for a GPU)
        self.staging = torch.empty(staging_bytes, dtype=torch.uint8, pin_memory=device.type == "cuda")

    def rows(self, numel: int) -> "torch.Tensor":
        """The (n_rows, numel) view that holds one tensor's operands."""
        return self._stack[:, :numel]


def _finish_operands(
    rows: "torch.Tensor", shape, name: str, files: Sequence
) -> "tuple[torch.Tensor, list[torch.Tensor]]":
    """Rows hold the float32 base (or zeros) and the models' weights: check them, turn weights into
    task vectors τ_t = θ_t − θ_base in place, return (base, [τ_t]) shaped like the tensor.

    Finiteness is checked on the float32 copies (one sum for all of them; a float32 sum is fast
    where a bf16 one is not, and the copy holds exactly the stored NaN/inf); `files[i]` names row i's
    file when a row is at fault (None: zeros, never at fault).
    """
    import torch

    if not torch.isfinite(rows.sum()):
        for row, file in zip(rows, files):
            if file is not None:
                check_finite(row, file, name)
    rows[1:].sub_(rows[:1])
    return rows[0].view(shape), [row.view(shape) for row in rows[1:]]


class CheckpointSource:
    """Reads operands lazily from checkpoint files, one tensor at a time, into a reused workspace."""

    def __init__(self, inputs: CheckpointSet, device: "torch.device"):
        self.inputs = inputs
        self.device = device
        self.tensor_names = inputs.tensor_names
        self.fingerprint = tuple(c.fingerprint for c in inputs.all) + (f"base={inputs.base is not None}",)
        floats = [i for i in inputs.reference.tensors.values() if i.is_float]
        max_numel = max((i.numel for i in floats), default=0)
        # a GPU's rows are filled through a pinned staging buffer; CPU rows straight from memory maps
        staging = 0 if device.type == "cpu" else max(
            (c.tensors[i.name].nbytes for c in inputs.all for i in floats), default=0)
        self.workspace = Workspace(len(inputs.models) + 1, max_numel, device, staging_bytes=staging)

    def is_float(self, name: str) -> bool:
        return self.inputs.reference.tensors[name].is_float

    def operands(self, name):
        inputs, ws = self.inputs, self.workspace
        info = inputs.reference.tensors[name]
        rows = ws.rows(info.numel)
        sources = [inputs.base, *inputs.models]
        for row, ckpt in zip(rows, sources):
            if ckpt is None:
                row.zero_()
            elif row.device.type == "cpu":
                inputs.copy_into(ckpt, name, row)
            else:  # through the pinned staging buffer: a fast host-to-device copy
                row.copy_(inputs.read(ckpt, name, finite=False, out=ws.staging).reshape(-1))
        files = [c.tensors[name].file if c is not None else None for c in sources]
        return _finish_operands(rows, info.shape, name, files)

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
    overlaps: Mapping[float, "GlobalOverlap"],
) -> "torch.Tensor":
    """Merge one tensor with its rule's method; float32 result, same shape and device as `base`,
    never memory shared with the operands (they are reused workspace or resident inputs)."""
    import torch

    from evomerge.methods.registry import get_method
    from evomerge.methods.spec import TensorContext

    spec = get_method(rule.method)
    eps = _needs_global_overlap(rule)
    overlap = overlaps[eps] if eps is not None else None
    ctx = TensorContext(name=name, seed=tensor_seed(recipe_seed, name), global_overlap=overlap)
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


def _merged_tensors(
    source: TensorSource, recipe: MergeRecipe, cache: OverlapCache, progress: bool = False,
    names: Sequence[str] | None = None,
) -> Iterator[tuple[str, "torch.Tensor"]]:
    """(name, float32 merged tensor) for every float tensor; non-float tensors pass through."""
    from tqdm.auto import tqdm

    names = list(names if names is not None else source.tensor_names)
    rules = _rules(recipe, [n for n in names if source.is_float(n)])
    overlaps = _overlaps_for(rules, source, cache, progress)
    for name in tqdm(names, desc="merging", unit="tensor", disable=not progress):
        if not source.is_float(name):
            yield name, source.passthrough(name)
            continue
        base, deltas = source.operands(name)
        merged = merge_tensor(name, base, deltas, rules[name], recipe.seed, overlaps)
        yield name, merged
        del merged  # freed before the next tensor's method runs: one result alive at a time


# -- sink 1: a Hugging Face checkpoint on disk --------------------------------------------------


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    files: tuple[str, ...]
    dtype: str
    tensors: int
    seconds: float


def merge_to_disk(
    recipe: MergeRecipe,
    out_dir: str | Path,
    device: "str | torch.device | None" = "cpu",
    shard_size: str | int = "5GB",
    dtype: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    overlap_cache: OverlapCache | None = None,
) -> MergeResult:
    """Merge checkpoints as `recipe` says and write a Hugging Face checkpoint to `out_dir`.

    Every input is validated before anything is written; the output is built in a temporary
    sibling directory renamed at the end, so an error or Ctrl-C leaves no `out_dir`.
    `dtype` overrides the recipe's output dtype.
    """
    import torch

    t0 = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    refuse_output_over_inputs(out_dir, [recipe.base, *recipe.models])  # before --overwrite could replace one
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir}: already exists; choose another directory or pass --overwrite")
    max_shard = parse_size(shard_size)
    dev = resolve_device(device)
    with CheckpointSet.open(recipe.base, recipe.models) as inputs:
        source = CheckpointSource(inputs, dev)
        rules = _rules(recipe, [n for n in source.tensor_names if source.is_float(n)])  # recipe errors first
        out_dtype = dtype or recipe.dtype or inputs.reference.dtype
        if out_dtype not in OUTPUT_DTYPES:
            raise RecipeError(f"output dtype {out_dtype!r}: use one of {', '.join(OUTPUT_DTYPES)}")
        plan = ShardPlan.build(
            [PlannedTensor(n, out_dtype if info.is_float else info.dtype, info.shape)
             for n, info in inputs.reference.tensors.items()],
            max_shard,
        )
        names = [t.name for t in plan.order]
        cache = overlap_cache if overlap_cache is not None else DEFAULT_OVERLAP_CACHE
        _overlaps_for(rules, source, cache, progress)  # statistics pass (if any) before the output exists
        torch_dtype = getattr(torch, out_dtype)
        max_numel = max((t.numel for t in inputs.reference.tensors.values()), default=0)
        with staged_output_dir(out_dir, overwrite) as staging:
            writer = ShardWriter(staging, plan)
            behind = _WriteBehind(writer, [_Caster(torch_dtype, max_numel, dev) for _ in range(2)])
            try:
                for name, merged in _merged_tensors(source, recipe, cache, progress, names):
                    behind.write(name, merged)
                    del merged
                behind.drain()
                files = writer.finish()
            finally:
                behind.close()  # the helper thread is idle before the file is closed under it
                writer.abort()
            _write_metadata(staging, recipe, inputs, out_dtype, dev)
    result = MergeResult(out_dir, tuple(files), out_dtype, len(names), time.perf_counter() - t0)
    log.info("wrote %s: %d tensors in %d file(s), %s, %.1fs",
             out_dir, result.tensors, len(files), out_dtype, result.seconds)
    return result


class _WriteBehind:
    """Writes each merged tensor on a helper thread while the next one merges (file writes and the
    final cast overlap the arithmetic). Cast buffers alternate; one is reused only once its previous
    write has finished, so at most len(casters) results wait for the disk. The writer's errors
    surface at the next `write` or at `drain`."""

    def __init__(self, writer: ShardWriter, casters: "list[_Caster]"):
        from concurrent.futures import ThreadPoolExecutor

        self.writer = writer
        self.casters = casters
        self.pending: list = [None] * len(casters)
        self.next = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="evomerge-write")

    def write(self, name: str, merged: "torch.Tensor") -> None:
        slot = self.next
        self.next = (slot + 1) % len(self.casters)
        if self.pending[slot] is not None:
            self.pending[slot].result()
        data = self.casters[slot](merged) if merged.is_floating_point() else merged
        self.pending[slot] = self.pool.submit(self.writer.write, name, data)  # one thread: the plan's order

    def drain(self) -> None:
        for future in self.pending:
            if future is not None:
                future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Caster:
    """Casts merged float32 tensors to the output dtype in one reused CPU buffer (its owner waits for
    the write before reusing it), sparing an allocation and its page faults per tensor."""

    def __init__(self, dtype: "torch.dtype", max_numel: int, device: "torch.device"):
        import torch

        self.dtype = dtype
        reuse = dtype != torch.float32 and device.type == "cpu"
        self._buffer = torch.empty(max_numel, dtype=dtype) if reuse else None

    def __call__(self, merged: "torch.Tensor") -> "torch.Tensor":
        if self._buffer is None:
            return merged.to(self.dtype)
        return self._buffer[: merged.numel()].view(merged.shape).copy_(merged)


def _write_metadata(staging: Path, recipe: MergeRecipe, inputs: CheckpointSet, out_dtype: str, device) -> None:
    ref = inputs.reference
    config = dict(ref.config)
    config["dtype"] = out_dtype
    if "torch_dtype" in config:  # older transformers versions read this key
        config["torch_dtype"] = out_dtype
    write_json(staging / CONFIG_FILE, config)
    copy_side_files(ref.path, staging)
    provenance = {
        "evomerge_version": __version__,
        "output": {"dtype": out_dtype, "device": str(device)},
        "inputs": {
            "base": _describe(inputs.base) if inputs.base is not None else None,
            "models": [_describe(m) for m in inputs.models],
        },
        "recipe": recipe.to_dict(),
    }
    header = "# Written by evomerge merge. Re-run with: evomerge merge <this file> OUT_DIR\n"
    (staging / RECIPE_FILE).write_text(header + yaml.safe_dump(provenance, sort_keys=False))


def _describe(ckpt: Checkpoint) -> dict:
    return {"path": str(ckpt.path.resolve()), "fingerprint": ckpt.fingerprint}


def load_recipe_file(path: str | Path) -> MergeRecipe:
    """A recipe YAML, or the merge_recipe.yaml provenance file of a merged checkpoint."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError):
        data = None  # MergeRecipe.from_yaml reports the problem with the file name
    if isinstance(data, dict) and "evomerge_version" in data and isinstance(data.get("recipe"), dict):
        return MergeRecipe.from_dict(data["recipe"], where=f"{path}: recipe")
    return MergeRecipe.from_yaml(path)


# -- sink 2: resident inputs, merged into memory or a live model --------------------------------


class ResidentMerger:
    """Base and agents loaded once onto a device; each `merge*` call reads no file.

    `keep='native'` (default) holds the base and the agents' weights in their stored dtype (bf16
    for typical RL agents: half the memory of float32 task vectors) and forms τ_t = θ_t − θ_base
    in float32 per tensor, exactly as the disk path does, so both give identical tensors.
    `keep='float32'` stores float32 task vectors instead: more memory (for bf16 inputs, 2x) and
    the subtraction is done once, not per merge.
    """

    def __init__(
        self,
        base: str | Path | None,
        models: Sequence[str | Path],
        device: "str | torch.device | None" = None,
        keep: Literal["native", "float32"] = "native",
        progress: bool = False,
    ):
        import torch
        from tqdm.auto import tqdm

        if keep not in ("native", "float32"):
            raise ValueError(f"keep must be 'native' or 'float32', got {keep!r}")
        self.device = resolve_device(device)
        self.keep = keep
        self.base_path = _same_path_key(base) if base is not None else None
        self.model_paths = [_same_path_key(m) for m in models]
        self.overlap_cache = OverlapCache()
        with CheckpointSet.open(base, models) as inputs:
            self.tensor_names = inputs.tensor_names
            self.fingerprint = tuple(c.fingerprint for c in inputs.all) + (f"base={inputs.base is not None}",)
            self.dtype = inputs.reference.dtype
            self._is_float = {n: inputs.reference.tensors[n].is_float for n in self.tensor_names}
            self._base: dict[str, torch.Tensor] = {}
            self._models: dict[str, list[torch.Tensor]] = {}
            for name in tqdm(self.tensor_names, desc="loading inputs", unit="tensor", disable=not progress):
                if not self._is_float[name]:
                    self._base[name] = inputs.read(inputs.reference, name, self.device)
                    continue
                base_t = inputs.read(inputs.base, name, self.device) if inputs.base is not None else None
                weights = [inputs.read(m, name, self.device) for m in inputs.models]
                if keep == "float32":
                    # the same float32 operations as the workspace path: identical task vectors
                    base32 = (base_t.to(torch.float32) if base_t is not None
                              else torch.zeros(weights[0].shape, device=self.device))
                    self._base[name] = base32
                    self._models[name] = [w.to(torch.float32, copy=True).sub_(base32) for w in weights]
                else:
                    if base_t is not None:
                        self._base[name] = base_t
                    self._models[name] = weights
            floats = [inputs.reference.tensors[n] for n in self.tensor_names if self._is_float[n]]
            max_numel = max((info.numel for info in floats), default=0)
        # keep='float32' hands out the resident tensors themselves; 'native' converts into a workspace
        self.workspace = Workspace(len(self.model_paths) + 1 if keep == "native" else 0, max_numel, self.device)

    # TensorSource
    def is_float(self, name: str) -> bool:
        return self._is_float[name]

    def operands(self, name):
        if self.keep == "float32":
            return self._base[name], self._models[name]
        models = self._models[name]
        rows = self.workspace.rows(models[0].numel())
        if name in self._base:
            rows[0].copy_(self._base[name].reshape(-1))
        else:
            rows[0].zero_()
        for row, weights in zip(rows[1:], models):
            row.copy_(weights.reshape(-1))
        rows[1:].sub_(rows[:1])  # the same float32 operations as CheckpointSource: identical task vectors
        return rows[0].view(models[0].shape), [row.view(models[0].shape) for row in rows[1:]]

    def passthrough(self, name):
        return self._base[name]

    def resident_bytes(self) -> int:
        tensors = list(self._base.values()) + [t for ts in self._models.values() for t in ts]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _check(self, recipe: MergeRecipe) -> None:
        base = _same_path_key(recipe.base) if recipe.base is not None else None
        if base != self.base_path or [_same_path_key(m) for m in recipe.models] != self.model_paths:
            raise RecipeError(
                f"recipe inputs (base {recipe.base}, models {recipe.models}) differ from the resident ones "
                f"(base {self.base_path}, models {self.model_paths}); build a ResidentMerger for those inputs"
            )

    def merge(self, recipe: MergeRecipe, dtype: str | None = None) -> Iterator[tuple[str, "torch.Tensor"]]:
        """(name, merged tensor) in the output dtype (`dtype`, else the recipe's, else the inputs'), on the device."""
        import torch

        self._check(recipe)
        out_dtype = dtype or recipe.dtype or self.dtype
        if out_dtype not in OUTPUT_DTYPES:
            raise RecipeError(f"output dtype {out_dtype!r}: use one of {', '.join(OUTPUT_DTYPES)}")
        torch_dtype = getattr(torch, out_dtype)
        for name, merged in _merged_tensors(self, recipe, self.overlap_cache):
            yield name, merged.to(torch_dtype) if self._is_float[name] else merged

    def merge_state_dict(self, recipe: MergeRecipe, dtype: str | None = None) -> dict[str, "torch.Tensor"]:
        return dict(self.merge(recipe, dtype))

    def merge_into(
        self, recipe: MergeRecipe, module: "torch.nn.Module", name_map: Callable[[str], str | None] | None = None
    ) -> None:
        """Copy the merged weights into `module`'s parameters and buffers in place (cast to their dtype).

        Checkpoint names are mapped to the module's state-dict names by `name_map`, by default the
        same name or the name with/without the `model.` prefix. Every mapping and shape is checked
        before the first copy.
        """
        import torch

        self._check(recipe)
        targets = module.state_dict(keep_vars=True)
        mapping: dict[str, torch.Tensor] = {}
        for name in self.tensor_names:
            key = name_map(name) if name_map is not None else _default_module_key(name, targets)
            if key is None or key not in targets:
                raise CheckpointError(
                    f"tensor '{name}' has no counterpart in the module ({type(module).__name__}); "
                    "pass name_map= to merge_into to map checkpoint names to state-dict names"
                )
            target = targets[key]
            shape = tuple(self._base[name].shape if name in self._base else self._models[name][0].shape)
            if tuple(target.shape) != shape:
                raise CheckpointError(
                    f"module tensor '{key}' has shape {list(target.shape)} but checkpoint tensor '{name}' "
                    f"has {list(shape)}"
                )
            mapping[name] = target
        with torch.no_grad():
            for name, merged in _merged_tensors(self, recipe, self.overlap_cache):
                mapping[name].copy_(merged)


def _default_module_key(name: str, targets: Mapping[str, object]) -> str | None:
    for key in (name, name.removeprefix("model."), f"model.{name}"):
        if key in targets:
            return key
    return None


def _same_path_key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())
