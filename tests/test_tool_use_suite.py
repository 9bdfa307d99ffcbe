"""The tool_use suite: BFCL data loading, prompts, per-category scoring and evaluation with replayed completions."""

from __future__ import annotations

import importlib.util
import json

import pytest

from evaluators.backends.replay import ReplayGenerator
from evaluators.errors import DataError, SuiteConfigError
from evaluators.registry import build_suite
from evaluators.suites.base import SuiteConfig
from evaluators.suites.bfcl_data import installed_bfcl_dir, load_tool_items, normalize_item, resolve_categories
from evaluators.suites.tool_use import ToolUseSuite, build_prompt, score_completion

WEATHER = {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                          "required": ["city"]}}
TIMER = {"name": "set_timer", "description": "Start a timer.",
         "parameters": {"type": "dict", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}}


def _item(id_, category, ground_truth, functions=(WEATHER,), question="What's the weather in Paris?"):
    return {"id": id_, "category": category, "question": [[{"role": "user", "content": question}]],
            "function": list(functions), "ground_truth": ground_truth}


SIMPLE = _item("simple_1", "simple_python", [{"get_weather": {"city": ["Paris"], "unit": ["", "celsius"]}}])
MULTIPLE = _item("multiple_1", "multiple", [{"set_timer": {"minutes": [5]}}], (WEATHER, TIMER), "Timer for 5 minutes")
PARALLEL = _item("parallel_1", "parallel", [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Rome"]}}])
PARALLEL_MULTIPLE = _item("parallel_multiple_1", "parallel_multiple",
                          [{"get_weather": {"city": ["Paris"]}}, {"set_timer": {"minutes": [5]}}], (WEATHER, TIMER))
IRRELEVANCE = _item("irrelevance_1", "irrelevance", [], (TIMER,), "Who wrote Hamlet?")
RELEVANCE = _item("live_relevance_1", "live_relevance", [], (WEATHER,))


@pytest.mark.parametrize("item, completion, passed, reason", [
    (SIMPLE, '[get_weather(city="paris")]', True, "ok"),
    (SIMPLE, '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "Celsius"}}', True, "ok"),
    (SIMPLE, '[get_weather(city="London")]', False, "value of 'city': got 'London'"),
    (SIMPLE, '[get_weather(unit="celsius")]', False, "missing parameter 'city'"),
    (SIMPLE, "The weather is nice.", False, "unparseable output"),
    (MULTIPLE, "[set_timer(minutes=5)]", True, "ok"),
    (MULTIPLE, '[get_weather(city="Paris")]', False, "wrong function: got get_weather, expected set_timer"),
    (MULTIPLE, '[set_timer(minutes="5")]', False, "type of 'minutes': expected integer, got str"),
    (PARALLEL, "[get_weather(city='Rome'), get_weather(city='Paris')]", True, "ok"),
    (PARALLEL, "[get_weather(city='Rome')]", False, "wrong number of calls: got 1"),
    (PARALLEL_MULTIPLE, "[set_timer(minutes=5), get_weather(city='Paris')]", True, "ok"),
    (IRRELEVANCE, "[]", True, "ok"),
    (IRRELEVANCE, "None of these functions can answer that.", True, "ok"),
    (IRRELEVANCE, "[set_timer(minutes=1)]", False, "called ['set_timer'] but no function fits"),
    (RELEVANCE, "[get_weather(city='Oslo')]", True, "ok"),
    (RELEVANCE, "[]", False, "no call made"),
])
def test_score_completion_per_category(item, completion, passed, reason):
    result = score_completion(item, completion)
    assert result.passed is passed and result.score == float(passed)
    assert reason in result.reason
    assert result.id == item["id"] and result.extra["category"] == item["category"]


def test_prompt_lists_the_tools_and_merges_the_items_system_message():
    item = _item("s", "simple_python", [], question="hi")
    item["question"] = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]]
    messages = build_prompt(normalize_item(item))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert json.dumps(WEATHER) in messages[0]["content"] and messages[0]["content"].endswith("Be brief.")
    assert "[function_name(param=value, ...), ...]" in messages[0]["content"]
    assert '"arguments"' in build_prompt(normalize_item(item), "json")[0]["content"]
    plain = build_prompt(normalize_item(item), chat=False)
    assert isinstance(plain, str) and plain.endswith("User: hi\n\nAssistant:")


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_evaluate_a_user_jsonl_file_with_replayed_completions(tmp_path):
    records = [SIMPLE, MULTIPLE, PARALLEL, IRRELEVANCE]
    records = [dict(r, split="search") for r in records] + [dict(PARALLEL_MULTIPLE, split="test")]
    data = _write_jsonl(tmp_path / "tools.jsonl", records)
    suite = build_suite({"kind": "tool_use", "data": str(data)})
    assert isinstance(suite, ToolUseSuite)
    replay = ReplayGenerator({"simple_1": '[get_weather(city="Paris")]', "multiple_1": "[set_timer(minutes=6)]",
                              "parallel_1": "[get_weather(city='Rome'), get_weather(city='Paris')]",
                              "irrelevance_1": "[]", "parallel_multiple_1": "unused"})
    result = suite.evaluate(replay, split="search")
    assert result.n == 4 and result.mean == pytest.approx(0.75)
    by_id = {r.id: r for r in result.items}
    assert "value of 'minutes': got 6 expected one of [5]" in by_id["multiple_1"].reason
    assert by_id["simple_1"].prompt[0]["role"] == "system"
    assert result.metrics == {"lenient_acc/irrelevance": 1.0, "lenient_acc/multiple": 0.0, "lenient_acc/parallel": 1.0,
                              "lenient_acc/simple_python": 1.0}
    assert result.scoring == "lenient (prompt: suite)" and result.to_dict()["scoring"] == "lenient (prompt: suite)"
    assert all(r.extra["prompt"] == "suite" for r in result.items)
    assert [r.id for r in suite.evaluate(replay, split="test").items] == ["parallel_multiple_1"]


def test_bfcl_scoring_is_selected_by_the_option_and_named_in_the_result(tmp_path):
    data = _write_jsonl(tmp_path / "tools.jsonl", [dict(r, split="search") for r in (SIMPLE, PARALLEL, IRRELEVANCE)])
    suite = build_suite({"kind": "tool_use", "data": str(data), "options": {"scoring": "bfcl"}})
    # The lenient reader takes a fenced block and `a_b` for `a.b`; bfcl-eval's decoder keeps "python" of the
    # fence and fails the decode.
    replay = ReplayGenerator({"simple_1": '```python\n[get_weather(city="Paris")]\n```',
                              "parallel_1": "[get_weather(city='Rome'), get_weather(city='Paris')]",
                              "irrelevance_1": "Calling set_timer() would not help."})
    result = suite.evaluate(replay, split="search")
    assert result.scoring == "bfcl (prompt: suite)"
    assert result.metrics == {"bfcl_acc/irrelevance": 1.0, "bfcl_acc/parallel": 1.0, "bfcl_acc/simple_python": 0.0}
    assert all(r.extra["scoring"] == "bfcl" for r in result.items)
    lenient = build_suite({"kind": "tool_use", "data": str(data)}).evaluate(replay, split="search")
    assert lenient.metrics["lenient_acc/simple_python"] == 1.0


def test_bfcl_scoring_refuses_the_json_format():
    with pytest.raises(SuiteConfigError, match="scoring: bfcl reads Python call syntax only"):
        build_suite({"kind": "tool_use", "options": {"scoring": "bfcl", "format": "json"}})


@pytest.mark.parametrize("reply", [
    "Calling get_weather() would not help with this.",
    "I could use set_timer(minutes=1), but it does not answer who wrote Hamlet.",
    "The set_timer(minutes=5) function only starts timers [it cannot look up authors].",
    "<think>maybe set_timer(minutes=1)?</think>No function fits.",
])
def test_lenient_irrelevance_a_refusal_that_mentions_a_function_is_not_a_call(reply):
    """Bug fixed: the prose search read the mentioned function as a call, failing a correct refusal."""
    result = score_completion(IRRELEVANCE, reply)
    assert result.passed, result.reason


@pytest.mark.parametrize("reply", [
    "Sure, I can look up the weather (in Paris) for you.",
    "I would use get_weather(city='Oslo') for that.",
    "Paris(France) is lovely this time of year.",
])
def test_lenient_live_relevance_a_prose_reply_does_not_pass(reply):
    """Bug fixed: a call-like span inside prose counted as the call a relevance item asks for."""
    result = score_completion(RELEVANCE, reply)
    assert not result.passed, result.reason


@pytest.mark.parametrize("reply", ["get_weather(city='Oslo')", "```python\nget_weather(city='Oslo')\n```",
                                   "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>",
                                   "<think>easy</think>[get_weather(city='Oslo')]"])
def test_lenient_relevance_and_irrelevance_still_read_explicit_calls(reply):
    assert score_completion(RELEVANCE, reply).passed
    assert not score_completion(IRRELEVANCE, reply.replace("get_weather(city='Oslo')", "set_timer(minutes=1)")
                                .replace('\"get_weather\"', '\"set_timer\"')).passed


def test_lenient_matching_still_reads_a_call_after_prose():
    assert score_completion(SIMPLE, "Sure! get_weather(city='Paris')").passed


def test_several_samples_score_their_share(tmp_path):
    data = _write_jsonl(tmp_path / "tools.jsonl", [SIMPLE])
    suite = ToolUseSuite(SuiteConfig(kind="tool_use", data=str(data), split="all", generation={"n": 2}))
    replay = ReplayGenerator({"simple_1": ['[get_weather(city="Paris")]', "no idea"]})
    (item,) = suite.evaluate(replay).items
    assert item.score == 0.5 and item.passed and item.extra["sample_scores"] == [1.0, 0.0]


def test_a_bfcl_directory_is_joined_with_its_possible_answers(tmp_path):
    question = {k: v for k, v in SIMPLE.items() if k in ("id", "question", "function")}
    _write_jsonl(tmp_path / "BFCL_v4_simple_python.json", [question])
    _write_jsonl(tmp_path / "BFCL_v4_irrelevance.json", [{k: IRRELEVANCE[k] for k in ("id", "question", "function")}])
    (tmp_path / "possible_answer").mkdir()
    _write_jsonl(tmp_path / "possible_answer" / "BFCL_v4_simple_python.json",
                 [{"id": "simple_1", "ground_truth": SIMPLE["ground_truth"]}])
    items = load_tool_items(tmp_path, resolve_categories(["simple", "irrelevance"]))
    assert [(it["id"], it["category"]) for it in items] == [("simple_1", "simple_python"), ("irrelevance_1", "irrelevance")]
    assert items[0]["ground_truth"] == SIMPLE["ground_truth"] and items[1]["ground_truth"] == []
    with pytest.raises(DataError, match="no BFCL file for category 'parallel'"):
        load_tool_items(tmp_path, resolve_categories(["parallel"]))
    (tmp_path / "possible_answer" / "BFCL_v4_simple_python.json").write_text("{}\n")
    with pytest.raises(DataError, match="no ground truth for 'simple_1'"):
        load_tool_items(tmp_path, resolve_categories(["simple"]))


def test_bad_data_and_options_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="not supported"):
        resolve_categories(["multi_turn_base"])
    assert resolve_categories("live")[0] == "live_simple" and resolve_categories(None)[0] == "simple_python"
    with pytest.raises(DataError, match="does not exist"):
        load_tool_items(tmp_path / "missing.jsonl")
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "question": "q", "function": "nope"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'function' must be a list"):
        load_tool_items(bad)
    twice = _write_jsonl(tmp_path / "twice.jsonl", [SIMPLE, SIMPLE])
    with pytest.raises(DataError, match="appears twice"):
        load_tool_items(twice)
    with pytest.raises(SuiteConfigError, match="invalid options for the tool_use suite: format"):
        ToolUseSuite(SuiteConfig(kind="tool_use", options={"format": "xml"}))


bfcl = pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None,
                          reason="needs the BFCL data: pip install --no-deps bfcl-eval==2026.3.23")


@bfcl
def test_the_installed_bfcl_data_loads_without_importing_the_package():
    import sys

    items = load_tool_items(None, resolve_categories("all"))
    counts = {}
    for it in items:
        counts[it["category"]] = counts.get(it["category"], 0) + 1
    assert counts["simple_python"] == 400 and counts["parallel_multiple"] == 200 and counts["live_irrelevance"] == 884
    assert len(items) == 3491
    assert installed_bfcl_dir().name == "data" and "bfcl_eval" not in sys.modules


@bfcl
def test_real_bfcl_items_score_their_ground_truth_and_fail_a_wrong_value(tmp_path):
    suite = ToolUseSuite(SuiteConfig(kind="tool_use", split="all", options={"categories": ["simple", "parallel"]}))
    items = {it["id"]: it for it in suite.load_items()}
    assert score_completion(items["simple_python_0"], "[calculate_triangle_area(base=10, height=5)]").passed
    wrong = score_completion(items["simple_python_0"], "[calculate_triangle_area(base=10, height=6)]")
    assert not wrong.passed and "value of 'height': got 6" in wrong.reason
    assert score_completion(items["parallel_0"], "[spotify.play(artist='Maroon 5', duration=15), "
                                                 "spotify.play(artist='Taylor Swift', duration=20)]").passed
    replay = ReplayGenerator({"simple_python_1": "[math.factorial(number=5)]", "simple_python_2": "[math.hypot(x=4, y=5)]"})
    subset = _write_jsonl(tmp_path / "subset.jsonl", [items["simple_python_1"], items["simple_python_2"]])
    result = ToolUseSuite(SuiteConfig(kind="tool_use", data=str(subset), split="all")).evaluate(replay)
    assert result.mean == 1.0 and result.n == 2


def test_the_toy_name_reads_the_zoo_file_or_says_how_to_build_it():
    try:
        items = load_tool_items("toy")
    except DataError as exc:
        assert "evomerge zoo build" in str(exc) and "data/toy/tool_use.jsonl" in str(exc)
    else:
        assert items and all(it["ground_truth"] for it in items)
