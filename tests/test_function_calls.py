"""Reading function calls out of replies (Python and JSON forms) and matching them against BFCL possible answers."""

from __future__ import annotations

import pytest

from evaluators.suites.call_matching import match_calls, standardize_string
from evaluators.suites.function_calls import CallParseError, FunctionCall, parse_calls

# -- parser ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '[get_weather(city="Paris", days=3)]',
    'get_weather(city="Paris", days=3)',
    "```python\n[get_weather(city='Paris', days=3)]\n```",
    'Sure, here you go: get_weather(city="Paris", days=3) - done.',
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
    '[{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}]',
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}',
    '{"tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}]}',
    '{"get_weather": {"city": "Paris", "days": 3}}',
    "```json\n{'name': 'get_weather', 'arguments': {'city': 'Paris', 'days': 3}}\n```",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
    '<think>which tool? maybe f(x=1)</think>[get_weather(city="Paris", days=3)]',
])
def test_every_supported_form_reads_the_same_call(text):
    assert parse_calls(text) == [FunctionCall("get_weather", {"city": "Paris", "days": 3})]


def test_several_calls_keep_their_order_and_literal_types():
    text = '[f(a=1, b=2.5, c=True, d=None, e=[1, "x"], g={"k": (1, 2)}), pkg.mod.g(x=-3)]'
    assert parse_calls(text) == [
        FunctionCall("f", {"a": 1, "b": 2.5, "c": True, "d": None, "e": [1, "x"], "g": {"k": (1, 2)}}),
        FunctionCall("pkg.mod.g", {"x": -3}),
    ]
    assert parse_calls("f(a=1)\ng(b=2)") == [FunctionCall("f", {"a": 1}), FunctionCall("g", {"b": 2})]
    assert parse_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g", "arguments": {}}</tool_call>') \
        == [FunctionCall("f"), FunctionCall("g")]


def test_names_read_as_strings_and_number_arithmetic_is_computed_as_bfcl_does():
    (call,) = parse_calls("f(unit=celsius, area=3*4, big=2**1000, const=math.pi, r=1/0)")
    assert call.arguments == {"unit": "celsius", "area": 12, "big": "2 ** 1000", "const": "math.pi", "r": "1 / 0"}


def test_positional_arguments_are_kept_apart():
    assert parse_calls("f(1, b=2)") == [FunctionCall("f", {"b": 2}, (1,))]


def test_an_explicit_empty_list_is_no_call():
    assert parse_calls("[]") == []
    assert parse_calls("```\n[]\n```") == []


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("   ", "empty"),
    ("I cannot help with that, no function (sorry) fits.", "no function call"),
    ("[get_weather(city='Paris'", "no function call"),
    ('{"city": "Paris", "days": 3}', "no function call"),
    ("[1, 2, 3]", "no function call"),
    ("f(a=)", "no function call"),
    ("f(**kwargs)", "no function call"),
    ("f(a={{1: 2}: 3})", "no function call"),
    ("Here you go:\n```python\ndef get_weather(city):\n    return lookup(city)\n```", "no function call"),
    ("[" * 5000 + "]" * 5000, "no function call"),
    ('{"name": "f", "arguments": ' * 3000, "no function call"),
])
def test_malformed_replies_raise_with_a_reason(text, why):
    with pytest.raises(CallParseError, match=why):
        parse_calls(text)


# -- matcher --------------------------------------------------------------------------------------

AREA = {"name": "geometry.area", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}, "options": {"type": "dict"},
    "exact": {"type": "boolean"}}, "required": ["base", "height"]}}
AREA_ANSWER = {"geometry.area": {"base": [10], "height": [5.0], "unit": ["square meters", "m2", ""],
                                 "tags": [["Red", "blue"], ""], "options": [{"mode": ["fast"], "n": [1, ""]}, ""],
                                 "exact": [True, ""]}}


def _match(text, expected=(AREA_ANSWER,), functions=(AREA,)):
    return match_calls(parse_calls(text), list(expected), list(functions))


@pytest.mark.parametrize("text", [
    "geometry.area(base=10, height=5.0)",
    "geometry.area(base=10, height=5)",  # int where float is expected: Python promotes it
    "geometry_area(base=10, height=5.0)",  # dots in names become underscores in many tool APIs
    "geometry.area(base=10, height=5.0, unit='Square-Meters')",  # BFCL string normalisation
    "geometry.area(base=10, height=5.0, tags=['red', 'Blue'], exact=True)",
    "geometry.area(base=10, height=5.0, options={'mode': 'FAST'})",
    "geometry.area(base=10, height=5.0, options={'mode': 'fast', 'n': 1})",
])
def test_right_calls_pass(text):
    assert _match(text).passed, _match(text).reason


@pytest.mark.parametrize("text, reason", [
    ("area.geometry(base=10, height=5.0)", "wrong function: got area.geometry, expected geometry.area"),
    ("geometry.area(base=10)", "missing parameter 'height'"),
    ("geometry.area(base=10, height=5.0, colour='red')", "unexpected parameter 'colour'"),
    ("geometry.area(base=10, height=6.0)", "value of 'height': got 6.0 expected one of [5.0]"),
    ("geometry.area(base='10', height=5.0)", "type of 'base': expected integer, got str '10'"),
    ("geometry.area(base=10.0, height=5.0)", "type of 'base': expected integer, got float 10.0"),
    ("geometry.area(base=10, height=5.0, exact=1)", "type of 'exact': expected boolean, got int 1"),
    ("geometry.area(base=10, height=5.0, unit='feet')", "value of 'unit': got 'feet'"),
    ("geometry.area(base=10, height=5.0, tags=['blue', 'red'])", "value of 'tags'"),
    ("geometry.area(base=10, height=5.0, tags=[1])", "type of 'tags': expected array of string, got element 1"),
    ("geometry.area(base=10, height=5.0, options={'mode': 'slow'})", "value of options['mode']: got 'slow'"),
    ("geometry.area(base=10, height=5.0, options={'speed': 1})", "unexpected key 'speed'"),
    ("geometry.area(base=10, height=5.0, options={'n': 1})", "missing key 'mode'"),
    ("geometry.area(10, 5.0)", "positional arguments in the call to geometry.area"),
    ("[geometry.area(base=10, height=5.0), geometry.area(base=10, height=5.0)]", "wrong number of calls: got 2"),
])
def test_wrong_calls_fail_with_the_reason(text, reason):
    result = _match(text)
    assert not result.passed
    assert reason in result.reason


def test_an_expected_parameter_not_marked_optional_must_be_given():
    answer = {"f": {"a": [1], "b": [2]}}
    schema = {"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                          "required": ["a"]}}
    assert not _match("f(a=1)", [answer], [schema]).passed
    assert "missing parameter 'b'" in _match("f(a=1)", [answer], [schema]).reason
    assert _match("f(a=1, b=2)", [answer], [schema]).passed


def test_a_variable_passed_by_name_matches_bfcls_string_answer():
    schema = {"name": "f", "parameters": {"type": "dict", "properties": {"data": {"type": "dict"}}, "required": ["data"]}}
    answer = {"f": {"data": ["my_data"]}}  # BFCL writes a variable as its name where the schema says dict
    assert _match("f(data=my_data)", [answer], [schema]).passed
    assert not _match("f(data=other)", [answer], [schema]).passed


def test_parallel_calls_match_in_any_order_and_each_is_used_once():
    schema = {"name": "weather", "parameters": {"type": "dict", "properties": {"city": {"type": "string"}},
                                                "required": ["city"]}}
    expected = [{"weather": {"city": ["Paris", "Paris, France"]}}, {"weather": {"city": ["Paris"]}}]
    # A greedy matcher gives call 1 to the first (looser) answer and then fails; a perfect matching succeeds.
    assert _match("[weather(city='Paris, France'), weather(city='Paris')]", expected, [schema]).passed
    assert _match("[weather(city='Paris'), weather(city='Paris, France')]", expected, [schema]).passed
    failed = _match("[weather(city='Paris'), weather(city='Rome')]", expected, [schema])
    assert not failed.passed and "no call matches expected call" in failed.reason and "'Rome'" in failed.reason


def test_parallel_multiple_functions():
    schemas = [{"name": "a", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
               {"name": "b", "parameters": {"type": "dict", "properties": {"y": {"type": "string"}}, "required": ["y"]}}]
    expected = [{"a": {"x": [1]}}, {"b": {"y": ["hi"]}}]
    assert _match("[b(y='HI'), a(x=1)]", expected, schemas).passed
    assert "wrong function" not in _match("[b(y='HI'), a(x=2)]", expected, schemas).reason
    assert "value of 'x': got 2" in _match("[b(y='HI'), a(x=2)]", expected, schemas).reason


def test_list_of_dicts_values_are_compared_dict_by_dict():
    schema = {"name": "q", "parameters": {"type": "dict", "properties": {
        "conds": {"type": "array", "items": {"type": "dict"}}}, "required": ["conds"]}}
    expected = [{"q": {"conds": [[{"field": ["age"], "op": [">"]}, {"field": ["job"], "op": ["="]}]]}}]
    assert _match("q(conds=[{'field': 'Age', 'op': '>'}, {'field': 'job', 'op': '='}])", expected, [schema]).passed
    assert not _match("q(conds=[{'field': 'job', 'op': '='}, {'field': 'age', 'op': '>'}])", expected, [schema]).passed
    assert "got 1 dicts, expected 2" in _match("q(conds=[{'field': 'age', 'op': '>'}])", expected, [schema]).reason


def test_string_normalisation_is_bfcls():
    assert standardize_string("April 1, 2024") == standardize_string("april 1 2024") == "april12024"
    assert standardize_string("New-York_City/NY.") == "newyorkcityny"
    assert standardize_string("it's") == 'it"s'
