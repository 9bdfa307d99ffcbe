"""Kept for one release: YAML reading moved to `evomerge.io.yaml_files`; import it from there."""

from evomerge.io.yaml_files import load_yaml, read_yaml_file  # noqa: F401
