"""The `tool_use` suite: BFCL-style function calling, scored by matching the calls against possible answers.

Two prompts (`options.prompt`):
- `suite` (the default): a system message with short instructions and the tool schemas (one JSON line each),
  then the item's own messages. The model answers with calls in Python syntax (the default, BFCL's prompting
  format) or JSON (`options.format: json`).
- `bfcl`: the prompt bfcl-eval 2026.3.23 gives a prompting model (`bfcl_prompt`): its default system prompt
  with the function docs as indented JSON (each description with its Python hint), merged into the item's own
  system message or put before the item's messages. With `chat: false` the text is the ChatML bfcl-eval's Qwen
  handler sends. With `scoring: bfcl` this is BFCL's protocol end to end, comparable with the leaderboard.

Two scorings (`options.scoring`), named in every result (`SuiteResult.scoring` with the prompt, the metric
names `<scoring>_acc/<category>` and each item's `extra["scoring"]`):
- `lenient` (the default, for tiny models): both call forms are read, also inside code fences, after prose or
  `<think>`, one per line (`function_calls.parse_calls`), and matched by `call_matching.match_calls`
  (`a_b` for `a.b`, any order, best assignment). Irrelevance items pass when the reply is no call - a refusal
  that merely mentions a function ("calling get_weather() would not help") is not a call; relevance items pass
  when the reply is a call (the whole reply, a fenced block or a `<tool_call>` tag) - a prose reply is not.
- `bfcl`: bfcl-eval 2026.3.23's verdicts (`bfcl_scoring`): its prompting decoder and AST checker; with
  `prompt: bfcl`, comparable with the BFCL leaderboard. Needs `format: python` (the only syntax its decoder reads).

The prompt is named next to the scoring: `SuiteResult.scoring` reads `bfcl (prompt: bfcl)`, `lenient (prompt:
suite)`, ... (`scoring_label`), and each item's `extra["prompt"]` is the prompt, as `extra["scoring"]` is the rule.

Options (`options:` in the suite's YAML):
- `categories`: BFCL categories or groups (`non_live` (default), `live`, `all`; `simple` = `simple_python`);
- `format`: `python` | `json` - the call syntax the suite's prompt asks for (`prompt: bfcl` asks for Python);
- `prompt`: `suite` | `bfcl`;
- `scoring`: `lenient` | `bfcl`.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, model_validator

from evaluators.protocol import ItemResult, Prompt, Request
from evaluators.suites.base import ItemSuite, SuiteConfig
from evaluators.suites.bfcl_data import expected_behaviour, load_tool_items, normalize_item, resolve_categories
from evaluators.suites.bfcl_prompt import bfcl_messages, chatml
from evaluators.suites.bfcl_scoring import bfcl_verdict
from evaluators.suites.call_matching import match_calls
from evaluators.suites.function_calls import CallParseError, parse_calls, safe_repr

__all__ = ["ToolUseOptions", "ToolUseSuite", "build_prompt", "score_completion", "scoring_label"]

_FORMAT_INSTRUCTIONS = {
    "python": ("Reply with the calls only, as a Python list: [function_name(param=value, ...), ...]. "
               "Name every argument."),
    "json": ('Reply with the calls only, as a JSON list: [{"name": "function_name", "arguments": {"param": value}}, ...].'),
}


class ToolUseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[str] | str | None = None
    format: Literal["python", "json"] = "python"
    # Not implied by `scoring: bfcl`: a configuration written before this option keeps the prompt it was scored
    # (and cached) with; the label in every result names both, so a suite-prompt number cannot pass for BFCL's.
    prompt: Literal["suite", "bfcl"] = "suite"
    scoring: Literal["lenient", "bfcl"] = "lenient"

    @model_validator(mode="after")
    def _bfcl_reads_python_only(self) -> "ToolUseOptions":
        if self.scoring == "bfcl" and self.format != "python":
            raise ValueError("scoring: bfcl reads Python call syntax only (bfcl-eval's prompting decoder); "
                             "use format: python, or scoring: lenient with format: json")
        if self.prompt == "bfcl" and self.format != "python":
            raise ValueError("prompt: bfcl asks for Python calls (bfcl-eval's prompt); format: json needs prompt: suite")
        return self


def scoring_label(scoring: str, prompt: str) -> str:
    """What a result says produced it: the scoring rule and the prompt, e.g. 'bfcl (prompt: bfcl)'."""
    return f"{scoring} (prompt: {prompt})"


def build_prompt(item: Mapping[str, Any], call_format: str = "python", chat: bool = True,
                 prompt: str = "suite") -> Prompt:
    """The item's prompt: bfcl-eval's (`prompt="bfcl"`: `bfcl_prompt`) or the suite's own - the system message
    (instructions + tool schemas, merged with the item's own system message) and the item's turns."""
    if prompt == "bfcl":
        messages = bfcl_messages(item)
        return messages if chat else chatml(messages)
    if prompt != "suite":
        raise ValueError(f"unknown tool_use prompt {prompt!r}; use 'suite' or 'bfcl'")
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


def score_completion(item: Mapping[str, Any], completion: str, scoring: str = "lenient") -> ItemResult:
    """Score one reply to one item (BFCL record or normalised item): pass/fail with the reason. Pure."""
    item = normalize_item(item)
    if scoring == "bfcl":
        verdict = bfcl_verdict(item["category"], completion, item["function"], item["ground_truth"])
        return ItemResult(
            id=item["id"], score=float(verdict.passed), passed=verdict.passed, reason=verdict.reason,
            completion=completion, extra={"category": item["category"], "scoring": scoring,
                                          "calls": [_render_decoded(c) for c in verdict.calls],
                                          "expected": item["ground_truth"]})
    if scoring != "lenient":
        raise ValueError(f"unknown tool_use scoring {scoring!r}; use 'lenient' or 'bfcl'")
    behaviour = expected_behaviour(item["category"])
    try:
        # Without a ground truth (relevance / irrelevance) only an explicit reply counts as a call: a call
        # mentioned inside prose is talk about a function, not a call of it.
        calls, parse_error = parse_calls(completion, embedded=behaviour == "match"), None
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
        extra={"category": item["category"], "scoring": scoring, "calls": [c.render() for c in calls],
               "expected": item["ground_truth"]},
    )


def _render_decoded(call: Mapping[str, Mapping[Any, Any]]) -> str:
    """A decoded bfcl call shown as source; a `**` keyword (which bfcl-eval files under None) as `**=...`."""
    (name, arguments), = call.items()
    shown = ", ".join(f"{'**' if k is None else k}={safe_repr(v)}" for k, v in arguments.items())
    return f"{name}({shown})"


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
        return Request(item["id"], build_prompt(item, self.options.format, self.config.chat, self.options.prompt))

    def score(self, item: Mapping[str, Any], completions: Sequence[str]) -> ItemResult:
        """The first completion decides pass/fail; with several samples the score is the share that pass."""
        if not completions:
            return ItemResult(str(item["id"]), 0.0, False, "the generator returned no completion")
        results = [score_completion(item, c, self.options.scoring) for c in completions]
        first = results[0]
        first.prompt = self.request(item).prompt
        first.extra["prompt"] = self.options.prompt
        if len(results) > 1:
            sample_scores = [r.score for r in results]
            first.score = sum(sample_scores) / len(sample_scores)
            first.completion = list(completions)
            first.extra["sample_scores"] = sample_scores
        return first

    @property
    def scoring(self) -> str:
        return scoring_label(self.options.scoring, self.options.prompt)

    @classmethod
    def scoring_of_options(cls, options: Mapping[str, Any]) -> str:
        """The label `scoring` gives, from a configuration's options as written (registry.scoring_of)."""
        fields = cls.options_model.model_fields
        return scoring_label(str(options.get("scoring", fields["scoring"].default)),
                             str(options.get("prompt", fields["prompt"].default)))

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Accuracy per BFCL category, named after the scoring rule: `bfcl_acc/parallel`, `lenient_acc/simple_python`."""
        by_category: dict[str, list[float]] = {}
        for result in results:
            name = f"{self.options.scoring}_acc/{result.extra.get('category', '?')}"
            by_category.setdefault(name, []).append(result.score)
        return {name: sum(v) / len(v) for name, v in sorted(by_category.items())}
