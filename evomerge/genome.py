"""Deprecated path, kept importable for one release: the search space lives in `evomerge.search.space`
(`SearchSpace`), its YAML schema and bundled spaces in `evomerge.search.space_spec`, and genes, groups and
their vector encoding in `evomerge.search.codec`."""

from evomerge.search.codec import Gene, Group, layer_blocks, write_option_scores  # noqa: F401
from evomerge.search.space import SearchSpace, read_num_layers  # noqa: F401
from evomerge.search.space_spec import (  # noqa: F401
    LayerGroups, ParamGene, SearchSpaceSpec, bundled_spaces_dir, list_bundled_spaces, load_space_spec,
)
