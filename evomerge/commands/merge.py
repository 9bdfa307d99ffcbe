"""Merge checkpoints as a recipe YAML says and write a Hugging Face checkpoint.

The recipe names a base, the models, a method with its parameters, an output dtype, a seed and
per-layer / per-module overrides (see the README). The output directory gets sharded safetensors
(+ index), config.json, the base's tokenizer and generation files, and merge_recipe.yaml
(the recipe, the evomerge version and fingerprints of the inputs). It appears only when the
merge succeeded: a failed or interrupted merge leaves nothing behind.

example:
  evomerge merge recipe.yaml merged/ --device cpu --shard-size 2GB
"""

from __future__ import annotations

import argparse

from evomerge.io.safetensors_format import OUTPUT_DTYPES

# run() returns only after the merged checkpoint's files are closed: the console script may skip Python's teardown
EXIT_WITHOUT_TEARDOWN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, a mergekit YAML, or the merge_recipe.yaml of an earlier merge")
    parser.add_argument("out_dir", help="output checkpoint directory (must not exist unless --overwrite)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available; default)")
    parser.add_argument("--shard-size", default="5GB", help="largest output shard, e.g. 5GB, 500MB, 2GiB (default 5GB)")
    parser.add_argument("--dtype", choices=OUTPUT_DTYPES, default=None,
                        help="output dtype (default: the recipe's, else the base's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it exists (only once the merge succeeded)")
    parser.add_argument("--workspace", default="16MiB",
                        help="float32 operands held at once (default 16MiB): tensors whose method allows it are "
                             "merged in row blocks of this size, the same result as whole tensors; 'none' merges "
                             "every tensor whole (a workspace of agents + 1 copies of the largest tensor)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="on a CPU, threads merging row blocks side by side, each operation single-threaded "
                             "(default: torch's thread count, OMP_NUM_THREADS or the cores); the same output for "
                             "any count")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import os

    # Before torch loads OpenMP: spinning waiters make every large tensor op wait out a time slice for
    # a descheduled thread on a shared CPU (measured 5x slower merges); sleeping ones cost ~nothing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from evomerge.engine import merge_to_disk
    from evomerge.mergekit_compat.importer import load_recipe_or_mergekit
    from evomerge.heap import keep_freed_memory

    keep_freed_memory()  # one merge frees and reallocates tensors of the same sizes: skip their page faults

    from evomerge.io.staging import signals_raise

    from evomerge.errors import CheckpointError, RecipeError
    from evomerge.io.writer import parse_size

    try:
        workspace = None if str(args.workspace).lower() == "none" else parse_size(args.workspace)
    except CheckpointError:
        raise RecipeError(f"--workspace {args.workspace!r}: use a size like 16MiB or 256MB, or 'none'") from None
    recipe = load_recipe_or_mergekit(args.recipe)  # a mergekit YAML (merge_method: ...) too
    with signals_raise():  # SIGTERM / SIGHUP unwind like Ctrl-C: the staging directory is removed
        result = merge_to_disk(
            recipe, args.out_dir, device=args.device, shard_size=args.shard_size, dtype=args.dtype,
            overwrite=args.overwrite, progress=not args.no_progress, workspace_bytes=workspace, threads=args.threads,
        )
    print(f"wrote {result.out_dir}: {result.tensors} tensors in {len(result.files)} file(s), "
          f"{result.dtype}, {result.seconds:.1f} s")
    return 0
