"""mergekit 0.1.5 interop both ways: read a mergekit YAML as a recipe, write a recipe as a mergekit YAML.

`methods` is the table of the methods both tools share (with mergekit's parameter scopes and defaults),
`importer` reads mergekit files (`evomerge merge` and `evomerge recipe convert` accept them), `export`
translates a recipe's rules for `evomerge.search.mergekit_export.to_mergekit` (`evomerge front --export`).
"""

from evomerge.mergekit_compat.importer import (
    MergekitImportError,
    is_mergekit_config,
    load_mergekit_file,
    recipe_from_mergekit,
)

__all__ = ["MergekitImportError", "is_mergekit_config", "load_mergekit_file", "recipe_from_mergekit"]
