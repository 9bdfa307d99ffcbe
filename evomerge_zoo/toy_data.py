"""The committed toy suite data (evaluators/data/toy/<family>.jsonl): how it is generated and checked.

Each file holds `SEARCH_ITEMS` items with "split": "search" and `TEST_ITEMS` with "split": "test",
drawn from the family's generator with `DATA_SEED` and distinct problems (keys) across splits.
The zoo trains on none of these problems.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluators.toy.splits import evaluation_splits
from evaluators.toy.task import ToyTask

from evomerge.errors import EvomergeError
from evomerge_zoo.families import FAMILIES, toy_data_path, write_jsonl

DATA_SEED = 0
SEARCH_ITEMS = 64
TEST_ITEMS = 128


def toy_splits(family: str) -> dict[str, list[ToyTask]]:
    return evaluation_splits(FAMILIES[family].sample, DATA_SEED, SEARCH_ITEMS, TEST_ITEMS)


def toy_records(family: str) -> list[dict]:
    splits = toy_splits(family)
    return [t.item for t in splits["search"] + splits["test"]]


def write_toy_data(out_dir: Path | None = None) -> dict[str, Path]:
    """(Re)write every family's data file; returns {family: path}."""
    paths = {}
    for family in FAMILIES:
        path = (out_dir / f"{family}.jsonl") if out_dir else toy_data_path(family)
        write_jsonl(toy_records(family), path)
        paths[family] = path
    return paths


def check_toy_data(family: str) -> Path:
    """The committed file's path, after checking it is exactly what the generator gives (else an error)."""
    path = toy_data_path(family)
    hint = "regenerate it with `evomerge zoo data`"
    if not path.is_file():
        raise EvomergeError(f"{path} is missing; {hint}")
    committed = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if committed != toy_records(family):
        raise EvomergeError(f"{path} differs from what the {family} toy generator gives (seed {DATA_SEED}); {hint}")
    return path


def evaluation_keys(family: str) -> set[str]:
    """The problem keys of the search and test items: training never draws these."""
    return {t.key for tasks in toy_splits(family).values() for t in tasks}
