"""Convert a recipe between evomerge's format and mergekit 0.1.5's, in the direction the file says.

`recipe convert SRC DST`: a mergekit YAML (it has `merge_method`) becomes an evomerge recipe; an evomerge
recipe (or a merged checkpoint's merge_recipe.yaml) becomes a mergekit YAML when mergekit can express it,
else the command names the rule it cannot. Filters, gradients and per-layer parameters are evaluated on the
tensor names of the base checkpoint (the first model without a base), so the checkpoints must exist.

examples:
  evomerge recipe convert mergekit.yaml recipe.yaml && evomerge merge recipe.yaml merged/
  evomerge recipe convert recipe.yaml mergekit.yaml && mergekit-yaml mergekit.yaml merged/
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    convert = sub.add_parser("convert", help="mergekit YAML -> evomerge recipe, or evomerge recipe -> mergekit YAML",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", help="a mergekit YAML or an evomerge recipe")
    convert.add_argument("dst", help="the converted file to write")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from evomerge.errors import RecipeError
    from evomerge.mergekit_compat.importer import is_mergekit_config, load_mergekit_file
    from evomerge.io.atomic import write_text_atomic
    from evomerge.yamlio import read_yaml_file

    src, dst = Path(args.src), Path(args.dst)
    if dst.exists() and not args.overwrite:
        raise RecipeError(f"{dst} exists; pass --overwrite to replace it")
    if src.resolve() == dst.resolve():
        raise RecipeError(f"{dst}: the output would replace its own source")
    if is_mergekit_config(read_yaml_file(src, RecipeError, "recipe")):
        recipe = load_mergekit_file(src)
        write_text_atomic(dst, f"# evomerge recipe converted from the mergekit configuration {src.resolve()}\n"
                               f"# merge it with: evomerge merge {dst.name} OUT_DIR\n" + recipe.to_yaml())
        print(f"wrote {dst} (evomerge recipe, method {recipe.method}, {len(recipe.overrides)} override(s))")
        return 0
    from evomerge.checkpoint import Checkpoint
    from evomerge.engine import load_recipe_file
    from evomerge.search.mergekit_export import to_mergekit

    recipe = load_recipe_file(src)
    names = [n for n, info in Checkpoint.open(recipe.base or recipe.models[0]).tensors.items() if info.is_float]
    config = to_mergekit(recipe, names)
    write_text_atomic(dst, f"# mergekit 0.1.5 configuration converted from {src.resolve()}\n"
                           f"# merge it with: mergekit-yaml {dst.name} OUT_DIR\n" + yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {dst} (mergekit configuration, merge_method {config['merge_method']})")
    return 0
