"""The `memory` suite: long-context question answering, read directly or by a MemAgent-style memory agent.

Data (`data:`): not set or `ruler` - the built-in seeded RULER-style tasks (`ruler.py`: key-value retrieval,
variable tracking, needle QA; lengths in characters); `toy` - the RL toy zoo's memory items; or a path to a
HotpotQA / SQuAD-style QA file (`qa_files.py`). Score (`options.scoring`): `sub_em` (the default; a normalised
gold answer occurs in the normalised reply, the MemAgent / RAM metric) or `ruler_exact` (RULER's
string_match_part: a gold answer, lower-cased, occurs in the lower-cased reply, nothing else normalised), with EM
and HotpotQA's token F1 as secondary metrics (`evaluators.metrics` has the exact definitions), and the score per
task as `<scoring>/<task>`. The scoring is named in every result (`SuiteResult.scoring`).

Options (`options:` in the suite's YAML):
- `mode`: `direct` (context + question in one prompt) | `memory_agent` (`memory_agent.py`);
- `scoring`: `sub_em` | `ruler_exact`;
- `tasks` (default all three), `lengths` (characters, default [4000]), `items_per_task` (default 50),
  `data_seed` (default 0), `hops` (4), `chains` (3), `distractors` (2): the built-in generator's settings;
- `chunk_size` (characters, default 2000), `memory_chars` (default 1000), `memory_max_new_tokens` (default 384):
  the memory agent's reading piece, memory bound and the token budget of each memory rewrite.
The answer step uses the suite's `generation:` settings. With `generation.n` > 1 the memory agent rewrites its
memory once per chunk (one trajectory per item) and draws the n answers from the final memory.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from evaluators.errors import DataError
from evaluators.metrics import exact_match, ruler_match, sub_em, token_f1
from evaluators.protocol import Generator, ItemResult, Prompt, Request, SuiteResult
from evaluators.suites.base import ItemSuite, SuiteConfig
from evaluators.suites.memory_agent import run_memory_agent
from evaluators.suites.qa_files import load_qa_file, qa_item
from evaluators.suites.ruler import TASKS, generate_items

__all__ = ["MemoryOptions", "MemorySuite", "direct_prompt", "score_completion"]

# Data names besides `ruler` (the built-in generator): QA files shipped inside this package.
BUNDLED_FILES = {"toy": "data/toy/memory.jsonl"}  # the RL toy zoo's memory family (`evomerge zoo build`)
SCORINGS = {"sub_em": sub_em, "ruler_exact": ruler_match}


class MemoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["direct", "memory_agent"] = "direct"
    scoring: Literal["sub_em", "ruler_exact"] = "sub_em"
    tasks: list[Literal["kv_retrieval", "variable_tracking", "needle_qa"]] = Field(default_factory=lambda: list(TASKS))
    lengths: list[PositiveInt] = Field(default_factory=lambda: [4000], min_length=1)
    items_per_task: int = Field(50, ge=1)
    data_seed: int = 0
    hops: int = Field(4, ge=1)
    chains: int = Field(3, ge=1)
    distractors: int = Field(2, ge=0)
    chunk_size: int = Field(2000, ge=1)
    memory_chars: int = Field(1000, ge=1)
    memory_max_new_tokens: int = Field(384, ge=1)


def direct_prompt(item: Mapping[str, Any]) -> str:
    return ("Read the document below, then answer the question after it.\n\n"
            f"Document:\n{item['context']}\n\n"
            f"Question: {item['question']}\nAnswer with the answer only, in a few words.")


def score_completion(item: Mapping[str, Any], completion: str, scoring: str = "sub_em") -> ItemResult:
    """The `scoring` metric (sub_em | ruler_exact) of one reply against the item's gold answers, with EM and F1
    in `extra`. Pure."""
    if scoring not in SCORINGS:
        raise ValueError(f"unknown memory scoring {scoring!r}; use one of {sorted(SCORINGS)}")
    item = qa_item(item)
    answers = item["answers"]
    score = SCORINGS[scoring](completion, answers)
    reason = "ok" if score == 1.0 else f"expected one of {answers!r:.200} in the answer, got {completion.strip()!r:.200}"
    return ItemResult(id=item["id"], score=score, passed=score == 1.0, reason=reason, completion=completion,
                      extra={"task": item["task"], "answers": answers, "scoring": scoring,
                             "em": exact_match(completion, answers), "f1": token_f1(completion, answers)})


class MemorySuite(ItemSuite):
    name = "memory"
    options_model = MemoryOptions

    def __init__(self, config: SuiteConfig):
        super().__init__(config)
        self._items: list[dict[str, Any]] | None = None

    def load_items(self) -> list[dict[str, Any]]:
        if self._items is None:
            if self.config.data in (None, "ruler"):
                o = self.options
                self._items = generate_items(o.tasks, o.lengths, o.items_per_task, o.data_seed,
                                             hops=o.hops, chains=o.chains, distractors=o.distractors)
            elif self.config.data in BUNDLED_FILES:
                path = Path(str(resources.files("evaluators").joinpath(BUNDLED_FILES[self.config.data])))
                if not path.is_file():
                    raise DataError(f"the bundled memory data {self.config.data!r} ({path}) is missing; "
                                    "build it with `evomerge zoo build`")
                self._items = load_qa_file(path)
            else:
                self._items = load_qa_file(self.config.data)
        return self._items

    def request(self, item: Mapping[str, Any]) -> Request:
        return Request(item["id"], self._prompt(direct_prompt(item)))

    def score(self, item: Mapping[str, Any], completions: Sequence[str]) -> ItemResult:
        """The first completion is scored; with several samples the score is their mean."""
        if not completions:
            return ItemResult(str(item["id"]), 0.0, False, "the generator returned no completion")
        results = [score_completion(item, c, self.scoring) for c in completions]
        first = results[0]
        first.prompt = item["question"]  # the context is rebuilt from the id (or the data file); not stored per item
        if len(results) > 1:
            sample_scores = [r.score for r in results]
            first.score = sum(sample_scores) / len(sample_scores)
            first.completion = list(completions)
            first.extra["sample_scores"] = sample_scores
        return first

    def evaluate(self, generator: Generator, split: str | None = None, limit: int | None = None,
                 seed: int = 0) -> SuiteResult:
        if self.options.mode == "direct":
            return super().evaluate(generator, split, limit, seed)
        start = time.perf_counter()
        items = self.items(split, limit, seed)
        answer_settings = self.config.generation.settings(seed)
        memory_settings = self.config.generation.model_copy(
            update={"max_new_tokens": self.options.memory_max_new_tokens}).settings(seed)
        traces = run_memory_agent(generator, items, chunk_size=self.options.chunk_size,
                                  memory_chars=self.options.memory_chars, memory_settings=memory_settings,
                                  answer_settings=answer_settings, chat=self.config.chat)
        results = []
        for item, trace in zip(items, traces):
            result = self.score(item, trace.answers)
            result.extra["memories"] = trace.memories  # what the agent kept after each chunk
            results.append(result)
        return SuiteResult.from_items(self.name, results, time.perf_counter() - start, self.summary(results),
                                      self.scoring)

    @property
    def scoring(self) -> str:
        return self.options.scoring

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """EM and F1 means, and the score per task (`sub_em/<task>` or `ruler_exact/<task>`)."""
        if not results:
            return {}
        out = {"em": sum(r.extra.get("em", 0.0) for r in results) / len(results),
               "f1": sum(r.extra.get("f1", 0.0) for r in results) / len(results)}
        by_task: dict[str, list[float]] = {}
        for r in results:
            by_task.setdefault(f"{self.scoring}/{r.extra.get('task', '?')}", []).append(r.score)
        out.update({k: sum(v) / len(v) for k, v in sorted(by_task.items())})
        return out

    def _prompt(self, text: str) -> Prompt:
        return [{"role": "user", "content": text}] if self.config.chat else text
