"""evomerge: merge RL-trained LLM agents and search for the best merge.

The public API, equal to the command line (docs/api.md has runnable examples):

    evomerge merge     -> load_recipe, MergeRecipe, merge_to_disk   (ResidentMerger: the same merge in memory)
    evomerge evaluate  -> build_suite, build_backend, load_suite_configs
    evomerge search    -> Experiment, run_search
    evomerge sweep     -> load_sweep_experiment, run_sweep
    evomerge analyze   -> analyze

Kept light on purpose: importing evomerge does not import torch, transformers, vLLM or Ray; each name
below is imported on first use (module-level __getattr__), so `from evomerge import MergeRecipe` loads
only what a recipe needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); the modules stay importable under these paths
_PUBLIC: dict[str, tuple[str, str]] = {
    "MergeRecipe": ("evomerge.recipe", "MergeRecipe"),
    "load_recipe": ("evomerge.io.provenance", "load_recipe_file"),
    "merge_to_disk": ("evomerge.engine", "merge_to_disk"),
    "MergeResult": ("evomerge.engine", "MergeResult"),
    "ResidentMerger": ("evomerge.resident", "ResidentMerger"),
    "Checkpoint": ("evomerge.io.reader", "Checkpoint"),
    "get_method": ("evomerge.methods.registry", "get_method"),
    "Experiment": ("evomerge.experiment", "Experiment"),
    "run_search": ("evomerge.runner", "run_search"),
    "load_sweep_experiment": ("evomerge.sweep_experiment", "load_sweep_experiment"),
    "run_sweep": ("evomerge.sweep", "run_sweep"),
    "analyze": ("evomerge.analysis", "analyze"),
    # evaluation entry points: the evaluators package's registry (it never imports evomerge)
    "build_suite": ("evaluators.registry", "build_suite"),
    "build_backend": ("evaluators.registry", "build_backend"),
    "load_suite_configs": ("evaluators.registry", "load_suite_configs"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'evomerge' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
