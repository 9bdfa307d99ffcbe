"""Disjoint search / test / training draws from a toy family, reproducible from a seed.

Two tasks are the same problem when their `key`s match (for coding: the operation, argument and
function name), and a problem lands in one split only: the
held-out test items are problems the search never scored and RL never trained on.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator

from evaluators.toy.task import ToyTask

Sampler = Callable[[random.Random, int], ToyTask]
TRAIN_INDEX_OFFSET = 1_000_000  # training items are numbered apart from the data files' items
MAX_TRIES_PER_ITEM = 1000


def evaluation_splits(sample: Sampler, seed: int, search: int, test: int) -> dict[str, list[ToyTask]]:
    """`search` then `test` tasks with distinct keys, each item tagged with its split."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[ToyTask]] = {"search": [], "test": []}
    index = 0
    for split, count in (("search", search), ("test", test)):
        tries = 0
        while len(out[split]) < count:
            task = sample(rng, index)
            tries += 1
            if tries > MAX_TRIES_PER_ITEM * max(count, 1):
                raise ValueError(f"could not draw {count} distinct {split} problems; the family has too few")
            if task.key in seen:
                continue
            seen.add(task.key)
            task.item["split"] = split
            out[split].append(task)
            index += 1
    return out


def training_tasks(sample: Sampler, seed: int, exclude: Iterable[str]) -> Iterator[ToyTask]:
    """An endless stream of tasks whose keys are not in `exclude` (repeats among themselves allowed)."""
    rng = random.Random(seed)
    excluded = set(exclude)
    index = TRAIN_INDEX_OFFSET
    misses = 0
    while True:
        task = sample(rng, index)
        if task.key in excluded:
            misses += 1
            if misses > MAX_TRIES_PER_ITEM:
                raise ValueError("every drawn training problem is an evaluation problem; the family has too few")
            continue
        misses = 0
        index += 1
        yield task
