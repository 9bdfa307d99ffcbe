"""Where the files that evomerge looks up by name live, in a checkout and in an installed wheel.

The bundled search spaces are edited in the repository's top-level search_spaces/ folder. A wheel
ships that folder inside the package as evomerge/search_spaces/ (setup.py and pyproject.toml map it),
because nothing outside the package directory is installed. So the lookup tries the installed layout
first and the checkout's folder next to the package second; in a checkout the first does not exist.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# folders shipped inside the package that a checkout keeps at the repository root
SHIPPED_FOLDERS = ("search_spaces",)


def bundled_dir(name: str) -> Path:
    """The folder of bundled `name` files (e.g. 'search_spaces'): evomerge/<name>/ in an installed
    wheel, else <repository>/<name>/ next to the evomerge package in a checkout or editable install."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"{name!r} is not a bundled folder; known: {', '.join(SHIPPED_FOLDERS)}")
    package = Path(str(resources.files("evomerge")))
    installed = package / name
    return installed if installed.is_dir() else package.parent / name
