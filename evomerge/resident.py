"""Sink 2 of the one merge path: inputs held resident on a device, merged into memory or a live model.

The search merges hundreds of candidates from the same base and agents: `ResidentMerger` reads them
once (through the checkpoint reader, with all its checks) and each `merge*` call then reads no file.
It is a `TensorSource` for `evomerge.engine._merged_tensors`, so its tensors equal `merge_to_disk`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Sequence

from evomerge.engine import OverlapCache, Workspace, _merged_tensors, output_dtype, resolve_device
from evomerge.errors import CheckpointError, RecipeError
from evomerge.io.reader import CheckpointSet
from evomerge.recipe import MergeRecipe

if TYPE_CHECKING:
    import torch


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
            self.fingerprint = inputs.fingerprint
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
        torch_dtype = getattr(torch, output_dtype(dtype, recipe, self.dtype))
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
