"""The contract between generation backends, benchmark suites and their users (the search).

A `Generator` turns requests (an id plus a plain or chat prompt) into completions.
An `Evaluator` (one benchmark suite) asks a generator for completions of its items, scores
them and returns a `SuiteResult` with per-item results, so a user can read why a merge fails.

This package never imports `evomerge`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence, Union, runtime_checkable

if TYPE_CHECKING:  # torch is heavy; the protocol only names it
    import torch

ChatMessage = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
Prompt = Union[str, Sequence[ChatMessage]]  # plain text, or chat messages (rendered by the chat template)


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings. temperature 0 means greedy decoding (the default, deterministic)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1  # completions per request (pass@k draws several)
    seed: int = 0
    stop: tuple[str, ...] = ()  # completions are cut at the first stop string (not included)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass(frozen=True)
class Request:
    """One generation request. `id` is stable across runs (task id, plus a step suffix for multi-step suites)."""

    id: str
    prompt: Prompt


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, requests: Sequence[Request], settings: GenerationSettings) -> list[list[str]]:
        """Return, for each request in order, `settings.n` completions (the text after the prompt)."""
        ...


@runtime_checkable
class WeightSwappable(Protocol):
    """A resident engine whose weights can be replaced in place without a restart."""

    def swap_weights(self, weights: Iterable[tuple[str, "torch.Tensor"]]) -> None:
        """Copy (name, tensor) pairs (HF checkpoint names) into the resident model. An engine whose swap
        refuses a NaN/inf tensor itself says so with a class attribute `checks_finite_weights = True`; the
        search's workers then leave that check to it (otherwise they check every tensor on the way in)."""
        ...


@dataclass
class ItemResult:
    id: str
    score: float  # 1.0/0.0 for pass/fail metrics, partial in [0, 1] otherwise
    passed: bool
    reason: str = ""  # why it failed (or 'ok'): wrong answer, timeout, syntax error, ...
    prompt: Any = None
    completion: str | list[str] = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. expected answer, all metrics


@dataclass
class SuiteResult:
    suite: str
    mean: float
    stderr: float
    n: int
    items: list[ItemResult]
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # secondary metrics (EM, F1, pass@k, ...)
    scoring: str = ""  # which scoring rule gave `mean` where a suite has several (tool_use: lenient | bfcl, ...)

    @classmethod
    def from_items(cls, suite: str, items: list[ItemResult], seconds: float = 0.0,
                   metrics: dict[str, float] | None = None, scoring: str = "") -> "SuiteResult":
        mean, se = mean_stderr([it.score for it in items])
        return cls(suite, mean, se, len(items), items, seconds, dict(metrics or {}), scoring)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n)); (nan, nan) for no values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


@runtime_checkable
class Evaluator(Protocol):
    name: str

    def evaluate(self, generator: Generator, split: str = "search", limit: int | None = None,
                 seed: int = 0) -> SuiteResult:
        """Score `generator` on `split` ('search', 'test', ...; a suite documents its splits).

        `limit` takes a seeded random subset of that many items (the same `seed` gives the same
        subset), so a search can score on a small slice and promote to a larger one.
        """
        ...
