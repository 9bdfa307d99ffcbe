"""Sink 2 of the one merge path: inputs held resident (on a device, memory-mapped, or compact), merged
into memory, a live model, or an engine's weight-loading iterator.

The search merges hundreds of candidates from the same base and agents: `ResidentMerger` reads them
once (through the checkpoint reader, with all its checks) and each `merge*` call then reads no file.
It merges through the engine's `merge_tensor` (per row block where the rule allows, evomerge.row_blocks),
so its tensors equal `merge_to_disk`'s bit for bit; tests pin that for every placement.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Sequence

from evomerge.engine import OverlapCache, Workspace, output_dtype, resolve_device
from evomerge.errors import CheckpointError, RecipeError
from evomerge.input_stores import CompactStore, DeviceStore, InputStore, MappedStore, tensor_nbytes
from evomerge.io.reader import CheckpointSet
from evomerge.memory_plan import workspace_bound, workspace_numel
from evomerge.recipe import MergeRecipe
from evomerge.row_blocks import merged_blocks, row_numel

if TYPE_CHECKING:
    import torch


PLACEMENTS = ("device", "host_mapped", "compact")
DEFAULT_WORKSPACE_BYTES = "auto"  # float32 operands of one row block, (agents + 1) x block: by the device
# (evomerge.memory_plan.AUTO_WORKSPACE_BYTES: 512 MiB on a GPU, 32 MiB on a CPU)


class ResidentMerger:
    """Base and agents read once; each `merge*` call reads no file (mapped pages aside).

    `placement` says where the inputs live (every placement gives the tensors of `evomerge merge`):
      - 'device' (default): private copies on `device`. `keep='native'` holds the stored dtype (bf16
        for typical RL agents) and forms τ_t = θ_t − θ_base in float32 per block, exactly as the disk
        path does; `keep='float32'` stores float32 task vectors instead (2x the memory for bf16 inputs,
        the subtraction done once).
      - 'host_mapped': read-only memory maps of the safetensors files, checked once (byte order,
        truncation, NaN/inf) and converted per block on use. The pages are the kernel's page cache, so
        every process on a node that maps the same files shares one copy (PSS: each of k processes is
        charged 1/k). On a GPU the blocks travel through a pinned staging buffer (untested here: no GPU).
      - 'compact': the base as in 'device'; each agent as a packed bitmask of the entries whose stored
        bits differ from the base's plus those entries' values (RL agents change 3-54 % of entries:
        1/8 byte + 2 x density bytes per bf16 entry instead of 2). Operands are the base with the
        changed values written over it: bit for bit the agent's weights.

    `workspace_bytes` bounds the float32 workspace: a tensor whose rule is row-blockable
    (`MethodSpec.row_blockable`) is merged in row blocks of at most that many operand bytes
    (evomerge.row_blocks). Other rules merge whole tensors; the workspace then grows to
    (agents + 1) x that tensor and stays that size (a search keeps merging it). `None`: one
    workspace of the largest tensor (no blocks).

    Memory held (the plan models these; `memory_bytes()` reports them):
      inputs   - 'device': the inputs' bytes (x2 for float32 bf16 task vectors), private;
                 'host_mapped': the files' pages, shared through the page cache (not in `inputs`);
                 'compact': base bytes + per agent (numel / 8 + changed x itemsize + 8 x rows)
      workspace - (agents + 1) x 4 x min(largest tensor, block) bytes (keep='float32': none),
                 plus, for host_mapped on a GPU, one pinned staging buffer of a block's native bytes
      output   - `merge` yields one merged tensor at a time in the output dtype; blocked tensors are
                 assembled into it block by block (no float32 copy of the whole tensor).
    """

    def __init__(
        self,
        base: str | Path | None,
        models: Sequence[str | Path],
        device: "str | torch.device | None" = None,
        keep: Literal["native", "float32"] = "native",
        progress: bool = False,
        placement: Literal["device", "host_mapped", "compact"] = "device",
        workspace_bytes: int | None | Literal["auto"] = DEFAULT_WORKSPACE_BYTES,
    ):
        import torch
        from tqdm.auto import tqdm

        if keep not in ("native", "float32"):
            raise ValueError(f"keep must be 'native' or 'float32', got {keep!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if keep == "float32" and placement != "device":
            raise ValueError(f"keep='float32' stores float32 task vectors on the device; placement {placement!r} "
                             "keeps the stored dtype (use keep='native')")
        if not (workspace_bytes is None or workspace_bytes == "auto"
                or (isinstance(workspace_bytes, int) and workspace_bytes > 0)):
            raise ValueError(f"workspace_bytes must be positive, None or 'auto', got {workspace_bytes!r}")
        self.device = resolve_device(device)
        workspace_bytes = workspace_bound(workspace_bytes, self.device.type)
        self.keep = keep
        self.placement = placement
        self.base_path = _same_path_key(base) if base is not None else None
        self.model_paths = [_same_path_key(m) for m in models]
        self.overlap_cache = OverlapCache()
        self._n_operands = len(self.model_paths) + 1
        with CheckpointSet.open(base, models) as inputs:
            self.tensor_names = inputs.tensor_names
            self.fingerprint = inputs.fingerprint
            self.dtype = inputs.reference.dtype
            self._is_float = {n: inputs.reference.tensors[n].is_float for n in self.tensor_names}
            self._shapes = {n: tuple(inputs.reference.tensors[n].shape) for n in self.tensor_names}
            self._passthrough: dict[str, torch.Tensor] = {}
            if placement == "host_mapped":
                self._store: InputStore = MappedStore(inputs, self.device)
            elif placement == "compact":
                self._store = CompactStore(self.device)
            else:
                self._store = DeviceStore(self.device, keep)
            for name in tqdm(self.tensor_names, desc="loading inputs", unit="tensor", disable=not progress):
                if not self._is_float[name]:
                    self._passthrough[name] = inputs.read(inputs.reference, name, self.device)
                else:
                    self._store.load(inputs, name)
            floats = [inputs.reference.tensors[n] for n in self.tensor_names if self._is_float[n]]
            max_numel = max((info.numel for info in floats), default=0)
        if workspace_bytes is None:
            self.workspace_bytes = self._n_operands * 4 * max(max_numel, 1)
        else:
            self.workspace_bytes = workspace_bytes
        # keep float32: the resident task vectors are the operands, no workspace
        numel = 0 if keep == "float32" else workspace_numel(len(self.model_paths), max_numel, self.workspace_bytes,
                                                            blockable=True)
        self.workspace = Workspace(self._n_operands if keep == "native" else 0, numel, self.device)

    # BlockSource (evomerge.row_blocks)
    def is_float(self, name: str) -> bool:
        return self._is_float[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def block_operands(self, name, rows, check_finite: bool = True):
        # the inputs were checked finite once, at load (every store): nothing to check per block
        shape = self._shapes[name]
        start, stop = (0, shape[0] if shape else 1) if rows is None else rows
        block_shape = shape if rows is None else (stop - start, *shape[1:])
        per_row = row_numel(shape)
        span = (start * per_row, stop * per_row)  # entries of the flattened tensor
        if self.keep == "float32":
            base, models = self._store.float32_views(name, span)
            return base.view(block_shape), [m.view(block_shape) for m in models]
        numel = span[1] - span[0]
        if numel > self.workspace.numel:  # a whole tensor whose rule cannot be blocked: grow (see class doc)
            self.workspace = Workspace(0, 0, self.device)  # free the old buffer before the larger one
            self.workspace = Workspace(self._n_operands, numel, self.device)
        rows_ = self.workspace.rows(numel)
        self._store.fill(name, span, rows_)
        rows_[1:].sub_(rows_[:1])  # the same float32 operations as CheckpointSource: identical task vectors
        return rows_[0].view(block_shape), [row.view(block_shape) for row in rows_[1:]]

    def check_operands(self, name, base, deltas) -> None:
        """Nothing to name: the inputs were checked finite at load, so a non-finite merge overflowed."""

    # TensorSource (the engine's whole-tensor protocol)
    def operands(self, name):
        return self.block_operands(name, None)

    def passthrough(self, name):
        return self._passthrough[name]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes this merger holds, by component (see the class doc); 'mapped' is shared page cache."""
        return {
            "inputs": self._store.private_bytes() + sum(tensor_nbytes(t) for t in self._passthrough.values()),
            "mapped": self._store.mapped_bytes(),
            "workspace": tensor_nbytes(self.workspace._stack) + tensor_nbytes(self.workspace.staging)
            + self._store.staging_bytes(),
        }

    def resident_bytes(self) -> int:
        """Private bytes of the inputs (mapped files excluded: they are shared page cache)."""
        return self.memory_bytes()["inputs"]

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
        torch_dtype = getattr(torch, output_dtype(dtype, recipe, self.dtype))
        out = None
        for name, rows, merged in self._blocks(recipe):
            if not self._is_float[name]:
                yield name, merged
            elif rows is None:
                yield name, merged.to(torch_dtype)
            else:  # assembled in the output dtype: no float32 copy of the whole tensor
                if rows[0] == 0:
                    out = torch.empty(self._shapes[name], dtype=torch_dtype, device=self.device)
                out[rows[0]:rows[1]].copy_(merged)
                if rows[1] == self._shapes[name][0]:
                    yield name, out
                    out = None

    def _blocks(self, recipe: MergeRecipe):
        return merged_blocks(self, recipe, self.overlap_cache, self.workspace_bytes, self._n_operands)

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
            shape = self._shapes[name]
            if tuple(target.shape) != shape:
                raise CheckpointError(
                    f"module tensor '{key}' has shape {list(target.shape)} but checkpoint tensor '{name}' "
                    f"has {list(shape)}"
                )
            mapping[name] = target
        with torch.no_grad():
            for name, rows, merged in self._blocks(recipe):
                target = mapping[name] if rows is None else mapping[name][rows[0]:rows[1]]
                target.copy_(merged)


def _default_module_key(name: str, targets: Mapping[str, object]) -> str | None:
    for key in (name, name.removeprefix("model."), f"model.{name}"):
        if key in targets:
            return key
    return None


def _same_path_key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())
