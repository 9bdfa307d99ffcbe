"""The three toy families as the zoo sees them: generator, suite configuration, demonstrations, reward.

Everything a model reads or is scored on goes through the suites' own code: items are loaded by
the suite's loader, prompts are the suite's `request`, rewards are the suite's scorer. So the RL
reward is exactly the benchmark metric the search later optimises.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from evaluators.toy import coding as toy_coding
from evaluators.toy import memory as toy_memory
from evaluators.toy import tool_use as toy_tool_use
from evaluators.toy.task import ToyTask


def _coding_reply(task: ToyTask, flawed: bool) -> str:
    """A chat reply holding the whole function in a ```python block, as the coding suite's instruction asks."""
    header = task.item["prompt"].splitlines()[0]
    body = task.flawed_answer if flawed else task.answer
    return f"```python\n{header}\n{body}```"


def _plain_reply(task: ToyTask, flawed: bool) -> str:
    return task.flawed_answer if flawed else task.answer


def _memory_curriculum(rng: random.Random, index: int) -> ToyTask:
    """Half of the base's memory examples are short (2-3 facts, at most one filler sentence).

    Measured: on full-length documents alone a 1M-parameter model stays at chance after 600 steps;
    with short ones mixed in, the key-matching attention forms within ~300 steps and carries over
    to full-length documents. Only pretraining uses this; RL and evaluation use full-length ones.
    """
    if rng.random() < 0.5:
        return toy_memory.sample(rng, index, facts=(2, 3), fillers=(0, 1))
    return toy_memory.sample(rng, index)


@dataclass(frozen=True)
class Family:
    name: str
    sample: Callable[[random.Random, int], ToyTask]
    reply: Callable[[ToyTask, bool], str]  # the assistant's text for a correct / flawed demonstration
    max_new_tokens: int  # generation budget in RL and evaluation (replies are short)
    options: Mapping[str, Any] = field(default_factory=dict)  # the suite's options for the toy data
    pretrain_sample: Callable[[random.Random, int], ToyTask] | None = None  # the base's curriculum (default: sample)

    def suite_config(self, data: str | Path) -> dict[str, Any]:
        """The suite settings (as in an experiment YAML) that score this family's toy data at `data`."""
        return {"kind": self.name, "data": str(data), "chat": True,
                "generation": {"max_new_tokens": self.max_new_tokens}, "options": dict(self.options)}


FAMILIES: dict[str, Family] = {
    "coding": Family("coding", toy_coding.sample, _coding_reply, max_new_tokens=48,
                     options={"timeout_seconds": 10.0, "pass_at_k": [1]}),
    "tool_use": Family("tool_use", toy_tool_use.sample, _plain_reply, max_new_tokens=40),
    "memory": Family("memory", toy_memory.sample, _plain_reply, max_new_tokens=8,
                     pretrain_sample=_memory_curriculum),
}


def toy_data_path(family: str) -> Path:
    """The committed toy data file of `family` (evaluators/data/toy/<family>.jsonl)."""
    return Path(str(resources.files("evaluators").joinpath(f"data/toy/{family}.jsonl")))


def write_jsonl(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def build_family_suite(family: str, data: str | Path):
    """The family's suite (from the evaluators registry) reading `data`."""
    from evaluators.registry import build_suite

    return build_suite(FAMILIES[family].suite_config(data))


def reward_function(family: str, suite) -> Callable[[Sequence[Mapping[str, Any]], Sequence[str]], list[float]]:
    """rewards(items, completions) -> one score per completion, by the suite's scorer.

    Coding runs its programs in the sandbox in parallel (the suite's `score_items`); the other
    two score each completion with the suite's pure `score`.
    """
    if family == "coding":
        from evaluators.suites.coding import score_items

        def coding_rewards(items, completions):
            results = score_items(items, [[c] for c in completions], suite.sandbox, suite.options.max_workers,
                                  timeout_seconds=suite.options.timeout_seconds)
            return [r.score for r in results]

        return coding_rewards

    def scored(items, completions):
        return [suite.score(item, [c]).score for item, c in zip(items, completions)]

    return scored


def load_through_suite(family: str, tasks: Sequence[ToyTask], path: Path):
    """Write the tasks' items to `path` and load them back with the family's suite: (suite, items in order)."""
    from evomerge.errors import EvomergeError

    write_jsonl([t.item for t in tasks], path)
    suite = build_family_suite(family, path)
    items = suite.load_items()
    loaded_ids = [str(it["id"]) for it in items]
    expected = [str(t.item.get("id", t.item.get("task_id"))) for t in tasks]
    if loaded_ids != expected:
        raise EvomergeError(f"the {family} suite loaded {path} as {len(items)} items, not the {len(tasks)} "
                            "written (or in another order); the toy family and the suite's loader disagree")
    return suite, items
