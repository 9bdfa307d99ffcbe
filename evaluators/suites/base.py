"""What every benchmark suite shares: its YAML configuration, stable splits, seeded subsets, the scoring loop.

A suite is a list of items (dicts loaded from a data file or generated from a seed). The
generic loop here turns the chosen items into requests, asks the generator once for all of
them (backends batch), and scores each completion. Suites with several generation steps per
item (the memory agent) override `evaluate`.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evaluators.errors import SuiteConfigError, describe_validation
from evaluators.protocol import GenerationSettings, Generator, ItemResult, Request, SuiteResult

SPLITS = ("search", "test", "all")


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: list[str] = Field(default_factory=list)

    def settings(self, seed: int) -> GenerationSettings:
        return GenerationSettings(self.max_new_tokens, self.temperature, self.top_p, self.n, seed, tuple(self.stop))


class SuiteConfig(BaseModel):
    """One named suite, as written in an experiment YAML (`suites: {coding: {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    kind: str  # registry name: coding | tool_use | memory | ...
    data: str | None = None  # a bundled data set name, or a path to a user file / directory
    split: str = "search"
    limit: int | None = Field(None, ge=1)
    search_fraction: float = Field(0.5, gt=0, lt=1)  # share of items in the 'search' split (the rest is 'test')
    chat: bool = True  # render prompts with the model's chat template
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    options: dict[str, Any] = Field(default_factory=dict)  # suite-specific settings, validated by the suite


def stable_fraction(item_id: str) -> float:
    """A number in [0, 1) fixed by the id alone: splits never change when items are added or reordered."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_items(items: Sequence[Mapping[str, Any]], split: str, search_fraction: float) -> list[Mapping[str, Any]]:
    """Items whose 'split' field says so, else a stable hash split of their ids."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if split == "all":
        return list(items)

    def side(item: Mapping[str, Any]) -> str:
        if item.get("split") in ("search", "test"):
            return item["split"]
        return "search" if stable_fraction(str(item["id"])) < search_fraction else "test"

    return [it for it in items if side(it) == split]


def subsample(items: Sequence[Mapping[str, Any]], limit: int | None, seed: int) -> list[Mapping[str, Any]]:
    """A seeded random subset of `limit` items, in their original order (the same seed gives the same subset)."""
    if limit is None or limit >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


class ItemSuite:
    """Base for single-step suites: subclasses load items, build a request per item and score completions."""

    name: str = "suite"
    options_model: type[BaseModel] | None = None  # validates `config.options` into `self.options`

    def __init__(self, config: SuiteConfig):
        self.config = config
        if self.options_model is not None:
            try:
                self.options = self.options_model(**config.options)
            except ValidationError as exc:
                raise SuiteConfigError(f"invalid options for the {self.name} suite: {describe_validation(exc)}") from None

    # -- to implement ----------------------------------------------------------------------------
    def load_items(self) -> list[dict[str, Any]]:
        """Every item of the configured data, each a dict with at least a unique string 'id'."""
        raise NotImplementedError

    def request(self, item: Mapping[str, Any]) -> Request:
        raise NotImplementedError

    def score(self, item: Mapping[str, Any], completions: Sequence[str]) -> ItemResult:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def items(self, split: str | None = None, limit: int | None = None, seed: int = 0) -> list[Mapping[str, Any]]:
        chosen = split_items(self.load_items(), split or self.config.split, self.config.search_fraction)
        return subsample(chosen, limit if limit is not None else self.config.limit, seed)

    def evaluate(self, generator: Generator, split: str | None = None, limit: int | None = None,
                 seed: int = 0) -> SuiteResult:
        start = time.perf_counter()
        items = self.items(split, limit, seed)
        requests = [self.request(it) for it in items]
        completions = generator.generate(requests, self.config.generation.settings(seed)) if requests else []
        results = [self.score(it, outs) for it, outs in zip(items, completions)]
        return SuiteResult.from_items(self.name, results, time.perf_counter() - start, self.summary(results),
                                      self.scoring)

    @property
    def scoring(self) -> str:
        """The scoring rule, for suites that offer several (recorded in every SuiteResult); "" when only one."""
        return ""

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Secondary metrics (e.g. EM and F1 next to sub_em); none by default."""
        return {}
