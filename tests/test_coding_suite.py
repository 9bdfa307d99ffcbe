"""The coding suite: code extraction, data formats, sandboxed scoring with replayed completions, pass@k."""

from __future__ import annotations

import json

import pytest

from evaluators.backends.replay import ReplayGenerator
from evaluators.errors import DataError, SuiteConfigError
from evaluators.metrics import pass_at_k
from evaluators.protocol import GenerationSettings, Request
from evaluators.registry import build_suite
from evaluators.suites.code_extraction import code_blocks, extract_code, function_program
from evaluators.suites.coding import (
    HUMANEVAL_STOPS, CodingSuite, build_prompt, make_sandbox, outputs_match, score_completion, score_items,
)
from evaluators.suites.coding_data import load_items, normalize_item, resolve_data

HUMANEVAL_IDS = ("HumanEval/0", "HumanEval/2", "HumanEval/38")  # /38's prompt defines a helper the solution uses


@pytest.fixture(scope="module")
def humaneval():
    items = {it["id"]: it for it in load_items(resolve_data("humaneval"))}
    return {task_id: items[task_id] for task_id in HUMANEVAL_IDS}


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox()


SUM_PROBLEM = {"id": "sum", "question": "Read two integers and print their sum.",
               "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5\n", "output": "0"},
                         {"input": "10 20\n", "output": "30\n"}]}


def fenced(code: str, prose: str = "Here is my solution:") -> str:
    return f"{prose}\n```python\n{code}\n```\nHope this helps."


# -- extraction -------------------------------------------------------------------------------------
def test_extraction_prefers_the_python_block_defining_the_entry_point():
    reply = ("Draft:\n```python\ndef f(x):\n    return 0\n```\nFixed:\n```python\ndef f(x):\n    return x\n```\n"
             "Usage:\n```python\nprint(f(2))\n```\nOutput:\n```\n2\n```")
    assert extract_code(reply, "f") == "def f(x):\n    return x\n"
    assert extract_code(reply) == "print(f(2))\n"  # no entry point: the last Python block
    assert code_blocks("```py\nx = 1\n")[-1] == ("py", "x = 1\n")  # a reply cut off inside its block
    assert extract_code("    return x + 1\n", "f") == "    return x + 1\n"  # no fence: a raw continuation


def test_function_program_handles_full_functions_bodies_and_continuations():
    prompt = 'import math\n\n\ndef f(x):\n    """Doc."""\n'
    full = function_program(prompt, "def f(x):\n    return math.sqrt(x)\n", "f")
    assert full.startswith(prompt.rstrip()) and full.endswith("def f(x):\n    return math.sqrt(x)\n")
    assert function_program(prompt, "return x\n", "f") == prompt + "    return x\n"  # unindented body is indented
    assert function_program("def f(x):\n    return", " x + 3", "f") == "def f(x):\n    return x + 3\n"


def test_stdout_comparison_ignores_trailing_space_and_tolerates_floats():
    assert outputs_match("3  \n\n", "3\n")
    assert outputs_match("0.3333333\n", "0.33333333")
    assert not outputs_match("1 2\n", "1\n2\n")
    assert not outputs_match("4\n", "3\n")
    assert not outputs_match("1.0\n", "1\n")  # integers compare exactly


# -- data formats -----------------------------------------------------------------------------------
def test_bundled_humaneval_has_164_problems():
    items = load_items(resolve_data("humaneval"))
    assert len(items) == 164 and items[0]["id"] == "HumanEval/0" and items[0]["format"] == "humaneval"


def test_stdio_formats_are_normalised():
    canonical = normalize_item(SUM_PROBLEM)
    cure = normalize_item({"task_id": "sum", "question": SUM_PROBLEM["question"],
                           "test_input": [t["input"] for t in SUM_PROBLEM["tests"]],
                           "test_output": [t["output"] for t in SUM_PROBLEM["tests"]]})
    io = {"inputs": [t["input"] for t in SUM_PROBLEM["tests"]], "outputs": [t["output"] for t in SUM_PROBLEM["tests"]]}
    apps = normalize_item({"problem_id": "sum", "question": SUM_PROBLEM["question"], "input_output": json.dumps(io)})
    lcb = normalize_item({"question_id": "sum", "question_content": SUM_PROBLEM["question"], "public_test_cases":
                          json.dumps([dict(t, testtype="stdin") for t in SUM_PROBLEM["tests"]])})
    expected = {"id": "sum", "format": "stdio", "question": SUM_PROBLEM["question"], "tests": SUM_PROBLEM["tests"]}
    assert canonical == cure == apps == lcb == expected


def test_bad_records_are_rejected_with_their_location(tmp_path):
    with pytest.raises(DataError, match="only stdin/stdout tests run here"):
        normalize_item({"id": "x", "question": "q", "tests": [{"input": "1", "output": "2", "testtype": "functional"}]})
    with pytest.raises(DataError, match=r"no\.jsonl:1: not a coding problem in a known format"):
        path = tmp_path / "no.jsonl"
        path.write_text('{"id": "x", "text": "?"}\n')
        load_items(path)
    dup = tmp_path / "dup.jsonl"
    dup.write_text((json.dumps(SUM_PROBLEM) + "\n") * 2)
    with pytest.raises(DataError, match="'sum' appears twice"):
        load_items(dup)
    with pytest.raises(DataError, match="neither a bundled set"):
        resolve_data(str(tmp_path / "missing.jsonl"))


# -- scoring in the sandbox -------------------------------------------------------------------------
def test_canonical_solutions_pass_as_continuations_and_as_chat_replies(humaneval, sandbox):
    items = list(humaneval.values())
    continuations = score_items(items, [[it["canonical_solution"]] for it in items], sandbox)
    replies = score_items(items, [[fenced(it["prompt"] + it["canonical_solution"])] for it in items], sandbox)
    for result in continuations + replies:
        assert (result.passed, result.score, result.reason) == (True, 1.0, "passed"), result.id


def test_failures_are_scored_zero_with_their_reason(humaneval, sandbox):
    item = humaneval["HumanEval/2"]  # truncate_number(number) -> its decimal part
    cases = {
        "    return number\n": "failed: AssertionError",
        "    return number % 1.0 +\n": "failed: SyntaxError: invalid syntax (main.py, line 12)",
        "    while True:\n        pass\n": "timed out",
        "    return number / 0\n": "failed: ZeroDivisionError: float division by zero",
    }
    results = score_items([item] * len(cases), [[c] for c in cases], sandbox)
    for result, reason in zip(results, cases.values()):
        assert (result.passed, result.score) == (False, 0.0)
        assert result.reason == reason


def test_stdio_programs_pass_or_fail_per_test(sandbox):
    item = normalize_item(SUM_PROBLEM)
    right = fenced("a, b = map(int, input().split())\nprint(a + b)")
    wrong = fenced("a, b = map(int, input().split())\nprint(a + b if a > 0 else 99)")
    looping = fenced("while True:\n    pass")
    crash = fenced("print(undefined_name)")
    results = score_items([item] * 4, [[right], [wrong], [looping], [crash]], sandbox, timeout_seconds=3.0)
    assert [r.passed for r in results] == [True, False, False, False]
    assert results[1].reason == "wrong answer on test 1: expected '0', got '99'"
    assert results[2].reason == "timed out on test 0"
    assert results[2].extra["seconds"] < 2 * 3.0 + 1  # one timeout, not one per test
    assert results[3].reason.startswith("runtime error: NameError") and results[3].reason.endswith("on test 0")


def test_score_completion_takes_raw_records(humaneval, sandbox):
    raw = {k: humaneval["HumanEval/0"][k] for k in ("prompt", "entry_point", "test")} | {"task_id": "HumanEval/0"}
    assert score_completion(raw, humaneval["HumanEval/0"]["canonical_solution"], sandbox=sandbox).passed
    assert not score_completion(SUM_PROBLEM, fenced("print(3)"), sandbox=sandbox).passed


def test_several_samples_give_unbiased_pass_at_k(tmp_path, humaneval):
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps({**humaneval[i], "task_id": i}) + "\n" for i in ("HumanEval/0", "HumanEval/2")))
    good = {i: humaneval[i]["canonical_solution"] for i in ("HumanEval/0", "HumanEval/2")}
    replay = ReplayGenerator({"HumanEval/0": [good["HumanEval/0"], "    return None\n"] * 2,  # 2 of 4 pass
                              "HumanEval/2": ["    return 0.0\n"] * 3 + [good["HumanEval/2"]]})  # 1 of 4
    suite = build_suite({"kind": "coding", "data": str(data), "split": "all", "chat": False,
                         "generation": {"n": 4, "temperature": 0.8}, "options": {"pass_at_k": [1, 2, 8]}})
    result = suite.evaluate(replay)
    by_id = {it.id: it for it in result.items}
    assert (by_id["HumanEval/0"].score, by_id["HumanEval/2"].score) == (0.5, 0.25)
    assert by_id["HumanEval/0"].reason == "2/4 samples passed; first failure: failed: AssertionError"
    assert result.mean == pytest.approx(0.375)
    assert result.metrics == pytest.approx({"pass@1": 0.375, "pass@2": (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2})
    assert result.metrics["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)  # pass@8 needs 8 samples: left out


def test_suite_evaluates_a_user_file_by_split_with_replay(tmp_path, humaneval):
    records = [{**humaneval["HumanEval/0"], "task_id": "HumanEval/0", "split": "search"},
               {**humaneval["HumanEval/2"], "task_id": "HumanEval/2", "split": "test"},
               dict(SUM_PROBLEM, split="search")]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    replay = ReplayGenerator({"HumanEval/0": fenced(humaneval["HumanEval/0"]["prompt"] + "    return False\n"),
                              "HumanEval/2": "x", "sum": fenced("print(sum(map(int, input().split())))")})
    result = build_suite({"kind": "coding", "data": str(data)}).evaluate(replay)  # split: search by default
    assert result.suite == "coding" and result.n == 2
    assert {(it.id, it.passed) for it in result.items} == {("HumanEval/0", False), ("sum", True)}
    assert result.mean == 0.5 and result.stderr == pytest.approx(0.5)
    item = next(it for it in result.items if it.id == "sum")
    assert item.prompt[-1]["role"] == "user" and "standard input" in item.prompt[-1]["content"]
    assert item.extra["code"] == "print(sum(map(int, input().split())))\n"


class RecordingGenerator:
    """Answers every request with a fixed completion and records the settings it was asked with."""

    name = "recording"

    def __init__(self, completion: str):
        self.completion, self.calls = completion, []

    def generate(self, requests: list[Request], settings: GenerationSettings) -> list[list[str]]:
        self.calls.append(([r.id for r in requests], settings))
        return [[self.completion] * settings.n for _ in requests]


def test_completion_style_prompts_use_the_classic_stop_strings(humaneval):
    suite = CodingSuite(build_suite("coding").config.model_copy(update={"chat": False, "split": "all"}))
    item = humaneval["HumanEval/0"]
    assert build_prompt(item, chat=False) == item["prompt"]
    gen = RecordingGenerator("    return True\n")
    result = suite.evaluate(gen, limit=2, seed=3)
    assert result.n == 2 and gen.calls[0][1].stop == HUMANEVAL_STOPS
    chat = build_prompt(item, chat=True, system_prompt="Be careful.")
    assert [m["role"] for m in chat] == ["system", "user"] and item["prompt"].rstrip() in chat[1]["content"]


def test_invalid_options_are_reported():
    with pytest.raises(SuiteConfigError, match="invalid options for the coding suite"):
        build_suite({"kind": "coding", "options": {"timeout": 3}})


def test_bundled_stdio_sample_is_solvable(sandbox):
    solutions = {
        "stdio/sum": "a, b = map(int, input().split())\nprint(a + b)",
        "stdio/reverse_words": "print(' '.join(input().split()[::-1]))",
        "stdio/count_vowels": "print(sum(c in 'aeiou' for c in input()))",
        "stdio/fibonacci": "a, b = 0, 1\nfor _ in range(int(input())):\n    a, b = b, a + b\nprint(a)",
        "stdio/min_max": "input()\nxs = list(map(int, input().split()))\nprint(max(xs), min(xs))",
        "stdio/palindrome": "w = input().strip()\nprint('YES' if w == w[::-1] else 'NO')",
    }
    items = load_items(resolve_data("stdio_sample"))
    assert sorted(it["id"] for it in items) == sorted(solutions)
    results = score_items(items, [[fenced(solutions[it["id"]])] for it in items], sandbox)
    assert [r.reason for r in results] == ["passed"] * len(items)
