"""The `tool_use` suite: BFCL-style function calling, scored by matching the calls against possible answers.

The prompt is chat: a system message with the instructions and the tool schemas (JSON, as BFCL ships
them), then the item's own messages. The model answers with calls in Python syntax (the default,
BFCL's prompting format) or JSON (`options.format: json`); both forms are read either way
(`function_calls.parse_calls`) and scored by `call_matching.match_calls`. Irrelevance items pass when
no call is made; relevance items when at least one is.

Options (`options:` in the suite's YAML):
- `categories`: BFCL categories or groups (`non_live` (default), `live`, `all`; `simple` = `simple_python`);
- `format`: `python` | `json` - the call syntax the prompt asks for.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from evaluators.protocol import ItemResult, Prompt, Request
from evaluators.suites.base import ItemSuite, SuiteConfig
from evaluators.suites.bfcl_data import expected_behaviour, load_tool_items, normalize_item, resolve_categories
from evaluators.suites.call_matching import match_calls
from evaluators.suites.function_calls import CallParseError, parse_calls

__all__ = ["ToolUseOptions", "ToolUseSuite", "build_prompt", "score_completion"]

_FORMAT_INSTRUCTIONS = {
    "python": ("Reply with the calls only, as a Python list: [function_name(param=value, ...), ...]. "
               "Name every argument."),
    "json": ('Reply with the calls only, as a JSON list: [{"name": "function_name", "arguments": {"param": value}}, ...].'),
}


class ToolUseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[str] | str | None = None
    format: Literal["python", "json"] = "python"


def build_prompt(item: Mapping[str, Any], call_format: str = "python", chat: bool = True) -> Prompt:
    """The system message (instructions + tool schemas, merged with the item's own system message) and the item's turns."""
    schemas = "\n".join(json.dumps(f, ensure_ascii=False) for f in item["function"])
    system = ("You can call the functions described below. Answer the user's request by calling one or more of them. "
              f"{_FORMAT_INSTRUCTIONS[call_format]} If no function fits the request, reply with [].\n\n"
              f"Functions (JSON schemas):\n{schemas}")
    messages = [dict(m) for m in item["messages"]]
    if messages and messages[0]["role"] == "system":
        system = f"{system}\n\n{messages.pop(0)['content']}"
    messages = [{"role": "system", "content": system}] + messages
    if chat:
        return messages
    turns = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages[1:])
    return f"{system}\n\n{turns}\n\nAssistant:"


def score_completion(item: Mapping[str, Any], completion: str) -> ItemResult:
    """Score one reply to one item (BFCL record or normalised item): pass/fail with the reason. Pure."""
    item = normalize_item(item)
    behaviour = expected_behaviour(item["category"])
    try:
        calls, parse_error = parse_calls(completion), None
    except CallParseError as exc:
        calls, parse_error = [], str(exc)
    if behaviour == "no_call":
        passed = not calls
        reason = "ok" if passed else f"called {[c.name for c in calls]} but no function fits the request"
    elif behaviour == "any_call":
        passed = bool(calls)
        reason = "ok" if passed else f"no call made ({parse_error or 'empty list'})"
    elif parse_error is not None:
        passed, reason = False, f"unparseable output: {parse_error}"
    else:
        match = match_calls(calls, item["ground_truth"], item["function"])
        passed, reason = match.passed, match.reason
    return ItemResult(
        id=item["id"], score=float(passed), passed=passed, reason=reason, completion=completion,
        extra={"category": item["category"], "calls": [c.render() for c in calls], "expected": item["ground_truth"]},
    )


class ToolUseSuite(ItemSuite):
    name = "tool_use"
    options_model = ToolUseOptions

    def __init__(self, config: SuiteConfig):
        super().__init__(config)
        explicit = self.options.categories is not None
        self.categories = resolve_categories(self.options.categories) if explicit else None
        self._items: list[dict[str, Any]] | None = None

    def load_items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = load_tool_items(self.config.data, self.categories)
        return self._items

    def request(self, item: Mapping[str, Any]) -> Request:
        return Request(item["id"], build_prompt(item, self.options.format, self.config.chat))

    def score(self, item: Mapping[str, Any], completions: Sequence[str]) -> ItemResult:
        """The first completion decides pass/fail; with several samples the score is the share that pass."""
        if not completions:
            return ItemResult(str(item["id"]), 0.0, False, "the generator returned no completion")
        results = [score_completion(item, c) for c in completions]
        first = results[0]
        first.prompt = self.request(item).prompt
        if len(results) > 1:
            sample_scores = [r.score for r in results]
            first.score = sum(sample_scores) / len(sample_scores)
            first.completion = list(completions)
            first.extra["sample_scores"] = sample_scores
        return first

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Accuracy per BFCL category."""
        by_category: dict[str, list[float]] = {}
        for result in results:
            by_category.setdefault(f"acc/{result.extra.get('category', '?')}", []).append(result.score)
        return {name: sum(v) / len(v) for name, v in sorted(by_category.items())}
