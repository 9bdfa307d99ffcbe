"""sweep.json: every finished evaluation of a sweep (a resumed run skips them), as typed values in memory.

On disk: {"references": {side: {name: entry}}, "points": {point key: {side: entry}}}, an entry being
{"suites": {suite: {mean, stderr, n}}, "items_file": ..., "scored_by": {suite: producer}} or {"failure": reason}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from evomerge.io.atomic import write_json_atomic
from evomerge.scoring.outcomes import EvalOutcome, SuiteSummary, summaries_to_dict


@dataclass(frozen=True)
class Evaluation:
    """One finished evaluation: its suites' summaries, or why it failed."""

    suites: dict[str, SuiteSummary] | None = None
    items_file: str = ""
    failure: str = ""
    scored_by: dict[str, Any] | None = None  # suite -> what produced its score (None in runs before it was recorded)

    @property
    def ok(self) -> bool:
        return self.suites is not None

    @classmethod
    def of(cls, outcome: EvalOutcome, items_file: str) -> "Evaluation":
        return cls(outcome.summaries, items_file, scored_by=outcome.producers_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Evaluation":
        if "suites" in data:
            return cls({s: SuiteSummary.from_dict(v) for s, v in data["suites"].items()}, data.get("items_file", ""),
                       scored_by=data.get("scored_by"))
        return cls(failure=data.get("failure", ""))

    def to_dict(self) -> dict[str, Any]:
        if self.suites is None:
            return {"failure": self.failure}
        out: dict[str, Any] = {"suites": summaries_to_dict(self.suites), "items_file": self.items_file}
        if self.scored_by is not None:
            out["scored_by"] = self.scored_by
        return out

    def mean_over(self, columns: Sequence[str]) -> float | None:
        """The average of the columns' means; None when a column is missing (or there are none)."""
        if self.suites is None or not columns or any(c not in self.suites for c in columns):
            return None
        return sum(float(self.suites[c].mean) for c in columns) / len(columns)


@dataclass
class SweepState:
    references: dict[str, dict[str, Evaluation]] = field(default_factory=dict)  # side -> reference name -> eval
    points: dict[str, dict[str, Evaluation]] = field(default_factory=dict)  # point key -> side -> eval

    def reference(self, name: str, side: str) -> Evaluation | None:
        return self.references.get(side, {}).get(name)

    def point(self, key: str, side: str) -> Evaluation | None:
        return self.points.get(key, {}).get(side)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepState":
        return cls({side: {n: Evaluation.from_dict(e) for n, e in entries.items()}
                    for side, entries in data.get("references", {}).items()},
                   {key: {side: Evaluation.from_dict(e) for side, e in sides.items()}
                    for key, sides in data.get("points", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"references": {side: {n: e.to_dict() for n, e in entries.items()}
                               for side, entries in self.references.items()},
                "points": {key: {side: e.to_dict() for side, e in sides.items()} for key, sides in self.points.items()}}

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())


def done(entry: Evaluation | None) -> bool:
    """Scored; a failed evaluation is tried again when the run resumes."""
    return entry is not None and entry.ok
