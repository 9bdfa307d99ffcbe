"""Provenance both ways: what a merged checkpoint says about how it was made, and reading it back.

Written next to the weights of every `merge_to_disk` output:
  config.json          the reference input's config with its dtype set to the output dtype
  tokenizer files ...  copied from the reference input (SIDE_FILE_PATTERNS)
  merge_recipe.yaml    evomerge's version, the output dtype and device, each input's path and content
                       fingerprint (and, for a Hugging Face Hub input, its repo and resolved commit), and the
                       full recipe with Hub ids pinned to that commit: `evomerge merge merge_recipe.yaml OUT`
                       re-runs it on the same files
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from evomerge.io.reader import Checkpoint, CheckpointSet
from evomerge.io.safetensors_format import CONFIG_FILE
from evomerge.io.writer import copy_side_files, write_json
from evomerge.io.yaml_files import load_yaml
from evomerge.recipe import MergeRecipe

if TYPE_CHECKING:
    import torch

RECIPE_FILE = "merge_recipe.yaml"
_HEADER = "# Written by evomerge merge. Re-run with: evomerge merge <this file> OUT_DIR\n"


def patched_config(config: Mapping[str, Any], out_dtype: str) -> dict[str, Any]:
    """The input's config.json saying the output dtype (under both keys transformers has read)."""
    patched = dict(config)
    patched["dtype"] = out_dtype
    if "torch_dtype" in patched:  # older transformers versions read this key
        patched["torch_dtype"] = out_dtype
    return patched


def provenance(recipe: MergeRecipe, inputs: CheckpointSet, out_dtype: str, device: "torch.device | str") -> dict:
    """The content of merge_recipe.yaml."""
    from evomerge import __version__

    return {
        "evomerge_version": __version__,
        "output": {"dtype": out_dtype, "device": str(device)},
        "inputs": {
            "base": _describe(inputs.base) if inputs.base is not None else None,
            "models": [_describe(m) for m in inputs.models],
        },
        "recipe": _with_absolute_inputs(recipe.to_dict(), inputs),
    }


def _with_absolute_inputs(recipe: dict, inputs: CheckpointSet) -> dict:
    """The recipe with relative input paths made absolute: the file re-runs the merge from any directory
    (a recipe built in Python holds paths relative to the directory it ran in, which the file does not say);
    an input from the Hugging Face Hub (or its cache) is named `org/name@<commit>`, the files it merged."""

    def absolute(path: str | None, ckpt: Checkpoint | None) -> str | None:
        if ckpt is not None and ckpt.origin is not None:
            return ckpt.origin.pinned
        if path is None or Path(path).expanduser().is_absolute() or not Path(path).expanduser().exists():
            return path  # absolute already, or not a local path (left as the user wrote it)
        return str(Path(path).expanduser().resolve())

    return {**recipe, "base": absolute(recipe["base"], inputs.base),
            "models": [absolute(m, c) for m, c in zip(recipe["models"], inputs.models)]}


def write_merge_metadata(
    directory: Path, recipe: MergeRecipe, inputs: CheckpointSet, out_dtype: str, device: "torch.device | str"
) -> None:
    """config.json, the side files and merge_recipe.yaml of a merged checkpoint, into `directory`
    (a staged output directory: it is renamed into place only after this succeeds)."""
    ref = inputs.reference
    write_json(directory / CONFIG_FILE, patched_config(ref.config, out_dtype))
    copy_side_files(ref.path, directory)
    text = _HEADER + yaml.safe_dump(provenance(recipe, inputs, out_dtype, device), sort_keys=False)
    (directory / RECIPE_FILE).write_text(text)


def _describe(ckpt: Checkpoint) -> dict:
    described = {"path": str(ckpt.path.resolve()), "fingerprint": ckpt.fingerprint}
    if ckpt.origin is not None:
        described["hub"] = {"repo_id": ckpt.origin.repo_id, "revision": ckpt.origin.revision}
    return described


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
