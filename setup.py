"""Package list for setuptools (the metadata is in pyproject.toml).

The bundled search spaces live in the top-level search_spaces/ folder, where people edit them, and
ship inside the wheel as the data-only package `evomerge.search_spaces` (pyproject.toml maps the
folder). A `[tool.setuptools.packages.find]` table cannot add a mapped package to the ones it finds,
so the list is built here: every package under evomerge/ and evaluators/ (namespace folders too, as
the `find` table did) plus the mapped one. evomerge.bundled finds the folder in either layout.
"""

from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["evomerge*", "evaluators*"]) + ["evomerge.search_spaces"])
