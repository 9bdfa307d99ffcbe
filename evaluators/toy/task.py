"""What a toy family generates: an item in its suite's format, with a correct and a flawed completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToyTask:
    item: dict[str, Any]  # the suite's record (id, prompt fields, tests / ground truth / answers)
    answer: str  # a completion the suite scores as correct
    flawed_answer: str  # the family's typical mistake: well formed, scored as wrong
    key: str  # what makes two tasks the same problem (duplicates are dropped across splits)
