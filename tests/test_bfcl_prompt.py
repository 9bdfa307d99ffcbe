"""`prompt: bfcl` against the prompts bfcl-eval itself builds (tests/bfcl/prompts.jsonl, written by
tests/bfcl/make_prompts.py with bfcl-eval 2026.3.23's load_dataset_entry and Qwen prompting handler): the chat
messages and the ChatML text must be equal byte for byte."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.backends.replay import ReplayGenerator
from evaluators.errors import DataError, SuiteConfigError
from evaluators.registry import build_suite
from evaluators.suites.bfcl_data import SUPPORTED_CATEGORIES, normalize_item
from evaluators.suites.bfcl_prompt import bfcl_messages, bfcl_system_prompt, chatml, prompt_data
from evaluators.suites.tool_use import build_prompt

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "tests" / "bfcl" / "prompts.jsonl"
ROWS = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _item(row):
    return normalize_item({"id": row["id"], "question": row["question"], "function": row["function"]},
                          row["category"], where=row["id"])


def test_the_vendored_prompts_cover_every_category_and_every_shape_of_first_turn():
    assert {row["category"] for row in ROWS} == set(SUPPORTED_CATEGORIES)
    shapes = {tuple(m["role"] for m in row["question"][0]) for row in ROWS}
    assert ("user",) in shapes and ("system", "user") in shapes
    assert any("assistant" in shape for shape in shapes)  # earlier turns of BFCL's live items
    assert any(shape.count("user") > 1 for shape in shapes)
    assert any(not json.dumps(row["function"], ensure_ascii=False).isascii() for row in ROWS)  # escaped by bfcl-eval


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_messages_and_text_equal_bfcl_evals_byte_for_byte(row):
    item = _item(row)
    assert build_prompt(item, chat=True, prompt="bfcl") == row["messages"]
    assert build_prompt(item, chat=False, prompt="bfcl") == row["formatted_prompt"]


def test_the_suite_sends_bfcl_evals_prompt_and_says_so(tmp_path):
    rows = [r for r in ROWS if r["category"] in ("parallel", "live_irrelevance")]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "category": r["category"], "question": r["question"],
                                        "function": r["function"], "split": "search"}) + "\n" for r in rows))
    suite = build_suite({"kind": "tool_use", "data": str(data), "options": {"prompt": "bfcl", "scoring": "bfcl"}})
    expected = {r["id"]: r["messages"] for r in rows}
    assert {it["id"]: suite.request(it).prompt for it in suite.load_items()} == expected
    result = suite.evaluate(ReplayGenerator({r["id"]: "[]" for r in rows}), split="search")
    assert result.scoring == "bfcl (prompt: bfcl)" and result.to_dict()["scoring"] == "bfcl (prompt: bfcl)"
    assert all(r.extra["prompt"] == "bfcl" and r.extra["scoring"] == "bfcl" for r in result.items)
    assert all(r.prompt == expected[r.id] for r in result.items)
    plain = build_suite({"kind": "tool_use", "data": str(data), "chat": False, "options": {"prompt": "bfcl"}})
    texts = {it["id"]: plain.request(it).prompt for it in plain.load_items()}
    assert texts == {r["id"]: r["formatted_prompt"] for r in rows}
    assert plain.scoring == "lenient (prompt: bfcl)"


def test_a_chatml_chat_template_renders_the_messages_to_bfcl_evals_text():
    """The backends render chat prompts with the model's template; a ChatML one (Qwen's, the zoo's) gives exactly
    the text bfcl-eval's Qwen handler sends."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(ROOT / "zoo" / "base")
    for row in ROWS[:: max(1, len(ROWS) // 12)] + [r for r in ROWS if len(r["messages"]) > 2]:
        rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
        assert rendered == row["formatted_prompt"], row["id"]


def test_the_suite_prompt_stays_the_default_and_differs_from_bfcls():
    item = _item(ROWS[0])
    assert build_prompt(item) == build_prompt(item, prompt="suite") != ROWS[0]["messages"]
    assert build_suite({"kind": "tool_use", "options": {"scoring": "bfcl"}}).options.prompt == "suite"


def test_the_prompt_leaves_the_item_as_it_was():
    item = _item(ROWS[0])
    before = json.dumps(item)
    bfcl_messages(item)
    bfcl_messages(item)  # the hint is added once per prompt, not once more per call
    assert json.dumps(item) == before
    assert bfcl_messages(item) == ROWS[0]["messages"]


def test_an_item_system_message_follows_the_bfcl_system_prompt_after_a_blank_line():
    item = {"id": "x", "function": [], "messages": [{"role": "system", "content": "Be terse."},
                                                    {"role": "user", "content": "hi"}]}
    messages = bfcl_messages(item)
    assert messages[0]["content"] == bfcl_system_prompt([]) + "\n\nBe terse."
    assert messages[1:] == [{"role": "user", "content": "hi"}]
    assert "Here is a list of functions in json format that you can invoke.\n[]\n" in messages[0]["content"]


def test_refusals_name_the_fault():
    with pytest.raises(DataError, match="function 'f' has no string 'description'"):
        bfcl_messages({"id": "x", "function": [{"name": "f", "parameters": {}}],
                       "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(SuiteConfigError, match="prompt: bfcl asks for Python calls"):
        build_suite({"kind": "tool_use", "options": {"prompt": "bfcl", "format": "json"}})
    with pytest.raises(SuiteConfigError):
        build_suite({"kind": "tool_use", "options": {"prompt": "bfcl_v3"}})
    with pytest.raises(ValueError, match="ends with a user message"):
        chatml([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(ValueError, match="role 'tool'"):
        chatml([{"role": "tool", "content": "a"}, {"role": "user", "content": "b"}])


def test_chatml_drops_an_earlier_turns_reasoning_as_the_qwen_handler_does():
    text = chatml([{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>x</think>\n\nb"},
                   {"role": "user", "content": "c"}])
    assert "<|im_start|>assistant\nb<|im_end|>\n" in text and "x" not in text


@pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval is not installed")
def test_the_vendored_template_is_what_bfcl_eval_builds():
    """evaluators/data/bfcl/prompt.json equals what make_prompts.py derives from bfcl-eval (a fresh process: the
    SDK stubs stay out of this one)."""
    code = ("import json, sys; sys.path.insert(0, 'tests/bfcl'); import make_prompts; "
            "print(json.dumps(make_prompts.template_data()))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == prompt_data()
