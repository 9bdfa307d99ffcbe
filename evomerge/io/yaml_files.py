"""YAML reading with YAML 1.2 floats.

PyYAML follows YAML 1.1, where `1e-5` (no dot) is a string, so `epsilon: 1e-5` would reach the
recipe as text. Every YAML file evomerge reads goes through `load_yaml`, which reads such numbers
as floats.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core-schema floats: 1e-5, 1.5E+3, .5, 3., inf, nan (plus YAML 1.1's forms, which it covers)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path, error: type[Exception], what: str) -> Any:
    """Parse the YAML file at `path`; a missing file or bad YAML raises `error` naming the file."""
    try:
        return load_yaml(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
