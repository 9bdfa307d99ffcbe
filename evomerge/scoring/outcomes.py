"""The typed values that travel between the loop, the scoring layer and the workers.

- `JobKey`: which evaluation a job is, within one run (a trial's rung, a reference, a sweep's grid
  point; on the search or the held-out side). Frozen and hashable: the loop looks its trial up by the
  key's fields, never by parsing a string.
- `EvalJob` / `EvalOutcome`: one job for a worker and what came back.
- `SuiteSummary`: one suite's mean, standard error and item count, as carried through the loop and
  the sweep; serialised (`to_dict`) only where a run record is written.
- `Producer`: what produced a score (backend and its version, dtype, device, sandbox mode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

Subject = Literal["trial", "reference", "point"]
Side = Literal["search", "heldout"]
SEARCH: Side = "search"
HELDOUT: Side = "heldout"


@dataclass(frozen=True)
class JobKey:
    """`subject` trial: `id` is the trial number and `rung` its fidelity rung (search side); reference: `id`
    is the reference model's name; point: `id` is the grid point's index among the jobs of its block."""

    subject: Subject
    id: int | str
    side: Side = SEARCH
    rung: int = 0

    @classmethod
    def trial(cls, number: int, rung: int) -> "JobKey":
        return cls("trial", number, SEARCH, rung)

    @classmethod
    def trial_heldout(cls, number: int) -> "JobKey":
        return cls("trial", number, HELDOUT)

    @classmethod
    def reference(cls, name: str, side: Side = SEARCH) -> "JobKey":
        return cls("reference", name, side)

    @classmethod
    def point(cls, index: int, side: Side) -> "JobKey":
        return cls("point", index, side)

    def __str__(self) -> str:  # for logs and error messages only; nothing parses it
        rung = f"/r{self.rung}" if self.subject == "trial" and self.side == SEARCH else ""
        return f"{self.subject}/{self.id}/{self.side}{rung}"


@dataclass(frozen=True)
class SuiteSummary:
    """A suite's score on one slice: the fields of `SuiteResult` the loop, the sweep and the tables use."""

    mean: float
    stderr: float | None
    n: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SuiteSummary":
        """From a `SuiteResult.to_dict()` (or a summary written by `to_dict`); values are kept as they are."""
        return cls(data["mean"], data.get("stderr"), data["n"])

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "stderr": self.stderr, "n": self.n}


def summaries(results: Mapping[str, Mapping[str, Any]]) -> dict[str, SuiteSummary]:
    return {suite: SuiteSummary.from_dict(r) for suite, r in results.items()}


def summaries_to_dict(summary: Mapping[str, SuiteSummary]) -> dict[str, dict[str, Any]]:
    return {suite: s.to_dict() for suite, s in summary.items()}


@dataclass(frozen=True)
class Producer:
    """What produced a score: the generation backend and its package version, the weights' dtype in the
    engine, the device, and the code sandbox's isolation mode (None when no suite runs code)."""

    backend: str
    backend_version: str
    dtype: str
    device: str
    sandbox: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Producer":
        return cls(**{k: data.get(k) for k in ("backend", "backend_version", "dtype", "device", "sandbox")})


@dataclass(frozen=True)
class EvalJob:
    """Score one set of weights (a recipe, or a checkpoint as it is) on some suites and one data slice."""

    key: JobKey
    suites: tuple[str, ...]
    split: str | None  # None: each suite's configured split
    limit: int | None  # None: each suite's configured limit
    seed: int
    recipe: dict[str, Any] | None = None
    checkpoint: str | None = None  # score this checkpoint's own weights (references)


@dataclass
class EvalOutcome:
    key: JobKey
    ok: bool
    reason: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # suite -> SuiteResult.to_dict() (with items)
    # the per-candidate overhead is merge_seconds + swap_seconds: producing the merged tensors (streamed), and
    # copying them into the engine (the rest of the engine's swap_weights)
    merge_seconds: float = 0.0
    eval_seconds: float = 0.0
    worker: str = ""
    fatal: bool = False  # the worker could not start
    # suite -> what produced its score (None: a cache entry written before producers were recorded)
    producers: dict[str, Producer | None] = field(default_factory=dict)
    swap_seconds: float = 0.0

    @property
    def summaries(self) -> dict[str, SuiteSummary]:
        return summaries(self.results)

    def producers_dict(self) -> dict[str, dict[str, Any] | None]:
        """The run record's form: suite -> producer fields (or None)."""
        return {s: (p.to_dict() if p is not None else None) for s, p in self.producers.items()}
