"""One-off tool: write tests/bfcl/verdicts.jsonl, bfcl-eval's own verdicts on a few hundred model replies.

tests/test_bfcl_scoring.py scores the same replies with the tool_use suite's `scoring: bfcl` and requires the
same verdict on every one (except the documented disagreements listed there). The verdicts come from bfcl-eval's
own evaluation entry points (eval_runner._evaluate_single_ast_entry / _evaluate_single_relevance_entry, with its
default_decode_ast_prompting decoder and its Qwen prompting handler's reasoning split), so they are a reference,
not a copy of our implementation.

Run from the repository root, in an environment where `bfcl-eval==2026.3.23` is installed (its API SDKs need
not be: the modules named in SDK_MODULES are replaced by inert stubs, as the checker never touches them):

    python tests/bfcl/make_verdicts.py            # rewrites tests/bfcl/verdicts.jsonl

Items: a seeded sample of real BFCL v4 items per supported category (functions and ground truth copied in, so
the test needs no BFCL data) plus hand-written items for types the sample may miss (float arrays, tuples, dicts,
lists of dicts, optional arrays). Replies: generated from each item's ground truth - correct, reordered, wrong
type, wrong value, missing / extra / positional arguments, code fences, reasoning, prose, JSON, malformed, and
adversarial Python (unary plus, arithmetic, `**`, subscripts, sets, nested calls).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import random
import sys
import types
from pathlib import Path
from typing import Any, Iterator

OUT = Path(__file__).with_name("verdicts.jsonl")
MODEL = "Qwen/Qwen3-8B"  # a prompting (non-FC) Qwen model of bfcl-eval's table: QwenHandler, underscore_to_dot False
SEED = 20260323
PER_CATEGORY = {"simple_python": 5, "multiple": 5, "parallel": 5, "parallel_multiple": 5, "live_simple": 5,
                "live_multiple": 4, "live_parallel": 4, "live_parallel_multiple": 3, "irrelevance": 5,
                "live_irrelevance": 5, "live_relevance": 5}
MAX_FUNCTION_CHARS = 3000  # keeps the vendored file small: items with huge schemas are skipped
# Imported by bfcl_eval's package modules at import time, never used by the AST checker or the decoder.
SDK_MODULES = ("anthropic", "tree_sitter", "tree_sitter_java", "tree_sitter_javascript", "tenacity", "overrides",
               "cohere", "openai", "google.genai", "httpx", "mistralai", "boto3", "qwen_agent", "writerai",
               "datamodel_code_generator", "dotenv")


# -- inert stand-ins for the SDKs ------------------------------------------------------------------------------

class _StubType(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubType(name, (_Stub,), {})

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __getitem__(cls, item):
        return cls


class _Stub(metaclass=_StubType):
    """Any SDK object: constructible, callable, every attribute another stub; as a decorator it changes nothing."""

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub(*args, **kwargs)

    def __or__(self, other):
        return self

    __and__ = __ror__ = __rand__ = __or__

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StubType(name, (_Stub,), {})
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a stub for an SDK module only when the real one is not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if not any(fullname == m or fullname.startswith(m + ".") for m in SDK_MODULES):
            return None
        for finder in sys.meta_path:
            if finder is not self and getattr(finder, "find_spec", None):
                try:
                    if finder.find_spec(fullname, path, target) is not None:
                        return None
                except (ImportError, ValueError):
                    pass
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


# -- the reference -----------------------------------------------------------------------------------------------

def reference():
    sys.meta_path.append(_StubFinder())
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker import eval_runner
    from bfcl_eval.model_handler.local_inference.qwen import QwenHandler
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting

    class Handler:  # what the runner needs of a prompting handler: its decoder
        def decode_ast(self, result, language=ReturnFormat.PYTHON, has_tool_call_tag=False):
            return default_decode_ast_prompting(result, language, has_tool_call_tag)

    handler = Handler()

    def model_response(raw: str) -> str:
        """The text QwenHandler stores as the model's response (its reasoning split)."""
        response = types.SimpleNamespace(choices=[types.SimpleNamespace(text=raw)],
                                         usage=types.SimpleNamespace(prompt_tokens=0, completion_tokens=0))
        return QwenHandler._parse_query_response_prompting(None, response)["model_responses"]

    def verdict(item: dict, raw: str) -> dict[str, Any]:
        text = model_response(raw)
        prompt = {"id": item["id"], "function": item["function"]}
        try:
            if "relevance" in item["category"]:
                out = eval_runner._evaluate_single_relevance_entry(handler, item["id"], text, prompt, MODEL,
                                                                   item["category"])
            else:
                out = eval_runner._evaluate_single_ast_entry(handler, item["id"], text, item["ground_truth"], prompt,
                                                             MODEL, item["category"], language=Language.PYTHON,
                                                             return_format=ReturnFormat.PYTHON)
        except Exception as exc:  # the reference's checker itself raised: it would stop the whole evaluation
            return {"valid": False, "crash": f"{type(exc).__name__}: {exc}"}
        return {"valid": bool(out["valid"]), "error_type": out.get("error_type", "")}

    return verdict


# -- items -------------------------------------------------------------------------------------------------------

def bfcl_items() -> list[dict[str, Any]]:
    import importlib.util

    data = Path(importlib.util.find_spec("bfcl_eval").submodule_search_locations[0]) / "data"
    rng = random.Random(SEED)
    items = []
    for category, count in PER_CATEGORY.items():
        records = [json.loads(line) for line in (data / f"BFCL_v4_{category}.json").read_text().splitlines() if line]
        answers = {}
        answer_file = data / "possible_answer" / f"BFCL_v4_{category}.json"
        if answer_file.is_file():
            answers = {r["id"]: r["ground_truth"] for r in map(json.loads, answer_file.read_text().splitlines()) if r}
        records = [r for r in records if len(json.dumps(r["function"])) <= MAX_FUNCTION_CHARS and len(r["question"]) == 1]
        for record in rng.sample(records, min(count, len(records))):
            items.append({"id": record["id"], "category": category, "question": record["question"],
                          "function": record["function"], "ground_truth": answers.get(record["id"], [])})
    return items


def _fn(name: str, properties: dict, required: list[str]) -> dict:
    return {"name": name, "description": f"{name} (hand-written test function)",
            "parameters": {"type": "dict", "properties": properties, "required": required}}


def handmade_items() -> list[dict[str, Any]]:
    """Types the sample may miss: float arrays, tuples, dicts, lists of dicts, optional arrays, booleans."""
    q = [[{"role": "user", "content": "(hand-written item)"}]]
    vec = _fn("math.norm", {"vector": {"type": "array", "items": {"type": "float"}},
                            "ord": {"type": "integer"}}, ["vector"])
    point = _fn("geo.distance", {"a": {"type": "tuple", "items": {"type": "float"}},
                                 "b": {"type": "tuple", "items": {"type": "float"}},
                                 "unit": {"type": "string"}}, ["a", "b"])
    book = _fn("book_hotel", {"hotel": {"type": "string"},
                              "stay": {"type": "dict", "properties": {"nights": {"type": "integer"},
                                                                     "breakfast": {"type": "boolean"}}},
                              "guests": {"type": "array", "items": {"type": "dict"}},
                              "tags": {"type": "array", "items": {"type": "string"}},
                              "budget": {"type": "float"}}, ["hotel", "stay"])
    flag = _fn("set_flag", {"name": {"type": "string"}, "on": {"type": "boolean"}, "level": {"type": "any"}}, ["name"])
    return [
        {"id": "hand_simple_vector", "category": "simple_python", "question": q, "function": [vec],
         "ground_truth": [{"math.norm": {"vector": [[1.0, 2.5, 3.0]], "ord": ["", 2]}}]},
        {"id": "hand_simple_tuple", "category": "simple_python", "question": q, "function": [point],
         "ground_truth": [{"geo.distance": {"a": [[0.0, 1.5]], "b": [[2.0, 3.0]], "unit": ["", "km", "kilometers"]}}]},
        {"id": "hand_simple_dict", "category": "simple_python", "question": q, "function": [book],
         "ground_truth": [{"book_hotel": {"hotel": ["Ritz Paris", "Ritz"],
                                          "stay": [{"nights": [3], "breakfast": ["", True]}],
                                          "guests": ["", [{"name": ["Ann"], "age": [30]}, {"name": ["Bo"], "age": [4]}]],
                                          "tags": ["", ["quiet", "sea view"]], "budget": ["", 500.0]}}]},
        {"id": "hand_multiple_flag", "category": "multiple", "question": q, "function": [vec, flag],
         "ground_truth": [{"set_flag": {"name": ["dark_mode"], "on": [True], "level": ["", "high"]}}]},
        {"id": "hand_parallel_overlap", "category": "parallel", "question": q, "function": [flag],
         "ground_truth": [{"set_flag": {"name": ["a"], "on": ["", True]}}, {"set_flag": {"name": ["a"], "on": [True]}}]},
        {"id": "hand_parallel_multiple_mix", "category": "parallel_multiple", "question": q, "function": [vec, flag],
         "ground_truth": [{"math.norm": {"vector": [[3.0, 4.0]], "ord": ["", 2]}},
                          {"set_flag": {"name": ["beta"], "on": [False]}}]},
        {"id": "hand_irrelevance", "category": "irrelevance", "question": q, "function": [flag], "ground_truth": []},
        {"id": "hand_live_relevance", "category": "live_relevance", "question": q, "function": [flag, vec],
         "ground_truth": []},
    ]


# -- replies -----------------------------------------------------------------------------------------------------

def _pick(values: list) -> Any:
    return next(v for v in values if v != "")


def _args(expected: dict, optional: bool) -> dict:
    return {p: _pick(v) for p, v in expected.items() if optional or "" not in v if any(x != "" for x in v)}


def _render(name: str, args: dict, positional: tuple = ()) -> str:
    parts = [repr(v) for v in positional] + [f"{k}={v!r}" for k, v in args.items()]
    return f"{name}({', '.join(parts)})"


def _calls(item: dict, optional: bool = False) -> list[tuple[str, dict]]:
    return [(name, _args(params, optional)) for call in item["ground_truth"] for name, params in call.items()]


def _listed(calls: list[tuple[str, dict]]) -> str:
    return "[" + ", ".join(_render(n, a) for n, a in calls) + "]"


def _schema(item: dict, name: str) -> dict:
    return next((f for f in item["function"] if f["name"] == name), item["function"][0])


def match_replies(item: dict) -> Iterator[tuple[str, str]]:
    calls = _calls(item)
    full = _calls(item, optional=True)
    name0, args0 = calls[0]
    props = _schema(item, name0)["parameters"].get("properties", {})
    required = _schema(item, name0)["parameters"].get("required", [])
    yield "canonical", _listed(calls)
    yield "canonical_with_optionals", _listed(full)
    yield "bare_calls", ", ".join(_render(n, a) for n, a in calls)
    yield "fence_plain", f"```\n{_listed(calls)}\n```"
    yield "fence_python", f"```python\n{_listed(calls)}\n```"
    yield "reasoning_then_calls", f"<think>\nThe user wants this; I will call the tool.\n</think>\n\n{_listed(calls)}"
    yield "prose_then_calls", f"Sure! Here are the calls: {_listed(calls)}"
    yield "json_calls", json.dumps([{"name": n, "arguments": a} for n, a in calls])
    yield "tool_call_tag", f"<tool_call>\n{json.dumps({'name': name0, 'arguments': args0})}\n</tool_call>"
    yield "empty_list", "[]"
    yield "empty_reply", ""
    yield "malformed", _listed(calls)[:-2]
    yield "tuple_body", "(" + ", ".join(_render(n, a) for n, a in calls) + ",)"
    yield "set_body", "{" + ", ".join(_render(n, a) for n, a in calls) + "}"
    yield "nested_list", "[" + _listed(calls) + "]"
    yield "one_per_line", "\n".join(_render(n, a) for n, a in calls)
    yield "wrapped_in_quotes", f"'{_listed(calls)}'"
    if len(calls) > 1:
        yield "reversed_order", _listed(calls[::-1])
        yield "missing_call", _listed(calls[:-1])
        yield "duplicate_call", _listed(calls[:-1] + [calls[0]])
    yield "extra_call", _listed(calls + [calls[0]])
    yield "wrong_name", _listed([(name0 + "_v2", args0)] + calls[1:])
    if "." in name0:
        yield "dot_as_underscore", _listed([(name0.replace(".", "_"), args0)] + calls[1:])
    yield "extra_parameter", _listed([(name0, {**args0, "extra_param": 1})] + calls[1:])
    yield "kwargs_unpacking", "[" + _render(name0, args0)[:-1] + (", " if args0 else "") + "**{'x': 1})]"
    if required and required[0] in args0:
        dropped = {k: v for k, v in args0.items() if k != required[0]}
        yield "missing_required", _listed([(name0, dropped)] + calls[1:])
        yield "required_positional", _listed([(name0, dropped)] + calls[1:]).replace(
            f"{name0}(", f"{name0}({args0[required[0]]!r}, ", 1).replace(", )", ")")
    yield "junk_positional", _listed(calls).replace(f"{name0}(", f"{name0}(999, ", 1).replace(", )", ")")
    optional = [p for p, v in item["ground_truth"][0][name0].items() if "" in v]
    if optional:
        yield "optional_wrong_value", _listed([(name0, {**args0, optional[0]: "zzz-wrong"})] + calls[1:])
    for param, value in list(args0.items())[:2]:  # two parameters' variants per item keep the file small
        kind = props.get(param, {}).get("type")
        other = {k: v for k, v in args0.items() if k != param}

        def swap(text: str, label: str, _param=param, _other=other) -> tuple[str, str]:
            return f"{label}:{_param}", "[" + ", ".join(
                [f"{name0}({', '.join([f'{k}={v!r}' for k, v in _other.items()] + [f'{_param}={text}'])})"]
                + [_render(n, a) for n, a in calls[1:]]) + "]"

        if isinstance(value, str):
            yield swap(repr(value.upper().replace(" ", "")), "string_case_spaces")
            yield swap(repr(value + " extra words"), "string_wrong")
            if value.isidentifier():
                yield swap(value, "string_as_bare_name")
            yield swap(repr([value]), "string_in_list")
        elif isinstance(value, bool):
            yield swap(repr(int(value)), "bool_as_int")
            yield swap(repr(str(value).lower()), "bool_as_string")
        elif isinstance(value, int):
            yield swap(repr(float(value)), "int_as_float")
            yield swap(repr(str(value)), "int_as_string")
            yield swap(f"+{value}" if value >= 0 else f"-{-value}", "unary_sign")
            if value > 1:
                yield swap(f"1 * {value}", "int_arithmetic")
        elif isinstance(value, float):
            if value == int(value):
                yield swap(repr(int(value)), "float_as_int")
            yield swap(repr(str(value)), "float_as_string")
            yield swap(f"+{value}", "unary_plus_float")
        elif isinstance(value, list):
            yield swap(repr(tuple(value)), "list_as_tuple")
            yield swap(repr(value[::-1]), "list_reversed")
            if value and all(isinstance(v, float) and v == int(v) for v in value):
                yield swap(repr([int(v) for v in value]), "float_list_as_ints")
            if value and all(isinstance(v, str) for v in value):
                yield swap(repr([v.upper() for v in value]), "string_list_upper")
        elif isinstance(value, dict):
            yield swap(repr({**value, "surprise": 1}), "dict_extra_key")
            yield swap(repr(dict(list(value.items())[:-1])), "dict_missing_key")
            yield swap(json.dumps(value), "dict_as_json_literal")
        if kind == "string" or isinstance(value, str):
            yield swap(f"{name0}(x=1)", "nested_call_value")
            yield swap("items[0]", "subscript_value")
            yield swap("math.pi", "attribute_value")
            yield swap("f'{1}'", "fstring_value")


def relevance_replies(item: dict) -> Iterator[tuple[str, str]]:
    function = item["function"][0] if item["function"] else {"name": "lookup", "parameters": {"required": ["q"]}}
    name = function["name"]
    required = function["parameters"].get("required", [])
    dummy = {p: "x" for p in required}
    yield "empty_list", "[]"
    yield "empty_reply", ""
    yield "none_literal", "None"
    yield "refusal", "I'm sorry, none of the available functions can answer this question."
    yield "refusal_mentions_call", f"Calling {name}() would not help here, because it does something else."
    yield "refusal_mentions_call_args", f"I could run {_render(name, dummy)}, but it cannot answer this."
    yield "call_then_prose", f"{_render(name, dummy)} is what I would use."
    yield "call", f"[{_render(name, dummy)}]"
    yield "bare_call", _render(name, dummy)
    yield "call_no_args", f"[{name}()]"
    yield "fenced_call", f"```\n[{_render(name, dummy)}]\n```"
    yield "fenced_python_call", f"```python\n[{_render(name, dummy)}]\n```"
    yield "reasoning_then_call", f"<think>Maybe {name}?</think>\n[{_render(name, dummy)}]"
    yield "reasoning_then_refusal", f"<think>I could call {name}(x=1).</think>\nNo function fits."
    yield "json_call", json.dumps([{"name": name, "arguments": dummy}])
    yield "name_only", f"[{name}]"
    yield "unknown_function", "[make_coffee(size='large')]"
    yield "two_lines", f"{_render(name, dummy)}\n{_render(name, dummy)}"
    yield "malformed_call", f"[{name}(x=]"
    yield "kwargs_call", f"[{name}(**{{'x': 1}})]"


def replies(item: dict) -> Iterator[tuple[str, str]]:
    if "relevance" in item["category"]:
        yield from relevance_replies(item)
    else:
        yield from match_replies(item)


def extra_replies() -> list[tuple[str, str, str]]:
    """(item id, label, reply): adversarial cases on the hand-written items."""
    return [
        ("hand_simple_vector", "float_array_ints", "[math.norm(vector=[1, 2.5, 3])]"),
        ("hand_simple_vector", "float_array_exact", "[math.norm(vector=[1.0, 2.5, 3.0], ord=2)]"),
        ("hand_simple_vector", "float_array_tuple", "[math.norm(vector=(1.0, 2.5, 3.0))]"),
        ("hand_simple_vector", "float_array_strings", "[math.norm(vector=['1.0', '2.5', '3.0'])]"),
        ("hand_simple_vector", "ord_as_float", "[math.norm(vector=[1.0, 2.5, 3.0], ord=2.0)]"),
        ("hand_simple_vector", "underscore_name", "[math_norm(vector=[1.0, 2.5, 3.0])]"),
        ("hand_simple_vector", "arithmetic_list", "[math.norm(vector=[1.0, 2.5] + [3.0])]"),
        ("hand_simple_vector", "arithmetic_with_builtin", "[math.norm(vector=[1.0, 2.5, 3.0], ord=abs(-1) + 1)]"),
        ("hand_simple_vector", "arithmetic_division_by_zero", "[math.norm(vector=[1.0, 2.5, 3.0], ord=1 // 0)]"),
        ("hand_simple_vector", "not_operator", "[math.norm(vector=[1.0, 2.5, 3.0], ord=not 2)]"),
        ("hand_simple_vector", "double_negation", "[math.norm(vector=[1.0, 2.5, 3.0], ord=-(-2))]"),
        ("hand_simple_vector", "invert_operator", "[math.norm(vector=[1.0, 2.5, 3.0], ord=~-2)]"),
        ("hand_simple_vector", "lambda_value", "[math.norm(vector=[1.0, 2.5, 3.0], ord=lambda: 2)]"),
        ("hand_simple_vector", "comparison_value", "[math.norm(vector=[1.0, 2.5, 3.0], ord=2 > 1)]"),
        ("hand_simple_vector", "ellipsis_value", "[math.norm(vector=[1.0, 2.5, 3.0], ord=...)]"),
        ("hand_simple_tuple", "tuples", "[geo.distance(a=(0.0, 1.5), b=(2.0, 3.0))]"),
        ("hand_simple_tuple", "lists", "[geo.distance(a=[0.0, 1.5], b=[2.0, 3.0], unit='KM')]"),
        ("hand_simple_tuple", "tuple_ints", "[geo.distance(a=(0, 1.5), b=(2, 3))]"),
        ("hand_simple_tuple", "unit_normalised", "[geo.distance(a=[0.0, 1.5], b=[2.0, 3.0], unit='Kilo-meters')]"),
        ("hand_simple_dict", "dict_ok", "[book_hotel(hotel='ritz paris', stay={'nights': 3})]"),
        ("hand_simple_dict", "dict_all", "[book_hotel(hotel='Ritz', stay={'nights': 3, 'breakfast': True}, "
                                         "guests=[{'name': 'ann', 'age': 30}, {'name': 'Bo', 'age': 4}], "
                                         "tags=['Quiet', 'sea-view'], budget=500)]"),
        ("hand_simple_dict", "dict_missing_key", "[book_hotel(hotel='Ritz', stay={'breakfast': True})]"),
        ("hand_simple_dict", "dict_extra_key", "[book_hotel(hotel='Ritz', stay={'nights': 3, 'pets': 1})]"),
        ("hand_simple_dict", "dict_nights_float", "[book_hotel(hotel='Ritz', stay={'nights': 3.0})]"),
        ("hand_simple_dict", "dict_nights_string", "[book_hotel(hotel='Ritz', stay={'nights': '3'})]"),
        ("hand_simple_dict", "guests_reordered", "[book_hotel(hotel='Ritz', stay={'nights': 3}, "
                                                 "guests=[{'name': 'Bo', 'age': 4}, {'name': 'Ann', 'age': 30}])]"),
        ("hand_simple_dict", "guests_empty", "[book_hotel(hotel='Ritz', stay={'nights': 3}, guests=[])]"),
        ("hand_simple_dict", "guests_one", "[book_hotel(hotel='Ritz', stay={'nights': 3}, guests=[{'name': 'Ann', 'age': 30}])]"),
        ("hand_simple_dict", "tags_empty", "[book_hotel(hotel='Ritz', stay={'nights': 3}, tags=[])]"),
        ("hand_simple_dict", "tags_order", "[book_hotel(hotel='Ritz', stay={'nights': 3}, tags=['sea view', 'quiet'])]"),
        ("hand_simple_dict", "tags_mixed_types", "[book_hotel(hotel='Ritz', stay={'nights': 3}, tags=['quiet', 5])]"),
        ("hand_simple_dict", "budget_string", "[book_hotel(hotel='Ritz', stay={'nights': 3}, budget='500')]"),
        ("hand_simple_dict", "stay_as_variable", "[book_hotel(hotel='Ritz', stay=my_stay)]"),
        ("hand_simple_dict", "stay_subscript", "[book_hotel(hotel='Ritz', stay=stays[0])]"),
        ("hand_multiple_flag", "ok", "[set_flag(name='dark_mode', on=True)]"),
        ("hand_multiple_flag", "level_any", "[set_flag(name='Dark Mode', on=True, level='HIGH')]"),
        ("hand_multiple_flag", "level_int", "[set_flag(name='dark_mode', on=True, level=3)]"),
        ("hand_multiple_flag", "on_one", "[set_flag(name='dark_mode', on=1)]"),
        ("hand_multiple_flag", "on_bare_true", "[set_flag(name='dark_mode', on=TRUE)]"),
        ("hand_multiple_flag", "other_function", "[math.norm(vector=[1.0])]"),
        ("hand_multiple_flag", "two_calls", "[set_flag(name='dark_mode', on=True), set_flag(name='dark_mode', on=True)]"),
        ("hand_parallel_overlap", "greedy_trap", "[set_flag(name='a', on=True), set_flag(name='a')]"),
        ("hand_parallel_overlap", "greedy_ok", "[set_flag(name='a'), set_flag(name='a', on=True)]"),
        ("hand_parallel_overlap", "both_full", "[set_flag(name='a', on=True), set_flag(name='a', on=True)]"),
        ("hand_parallel_multiple_mix", "ok", "[set_flag(name='beta', on=False), math.norm(vector=[3.0, 4.0])]"),
        ("hand_parallel_multiple_mix", "ints", "[math.norm(vector=[3, 4]), set_flag(name='beta', on=False)]"),
        ("hand_parallel_multiple_mix", "on_zero", "[math.norm(vector=[3.0, 4.0]), set_flag(name='beta', on=0)]"),
        ("hand_parallel_multiple_mix", "three", "[math.norm(vector=[3.0, 4.0]), set_flag(name='beta', on=False), "
                                                "set_flag(name='beta', on=False)]"),
        ("hand_irrelevance", "mention", "The function set_flag(name='x') only toggles flags; it cannot answer this."),
        ("hand_irrelevance", "code_block_program", "```python\ndef answer():\n    return 42\n```"),
        ("hand_irrelevance", "markdown_list", "[1, 2, 3]"),
        ("hand_irrelevance", "string_list", "['I cannot help with that']"),
        ("hand_live_relevance", "prose", "Sure, I can help you toggle a flag. Which one?"),
        ("hand_live_relevance", "prose_with_parens", "Flags (like dark mode) can be toggled."),
        ("hand_live_relevance", "call_with_positional", "[set_flag('dark')]"),
        ("hand_live_relevance", "method_on_call", "[client().set_flag(name='x')]"),
    ]


def main() -> None:
    verdict = reference()
    items = bfcl_items() + handmade_items()
    by_id = {item["id"]: item for item in items}
    rows = []
    for item in items:
        for label, reply in replies(item):
            rows.append((item, label, reply))
    rows += [(by_id[i], label, reply) for i, label, reply in extra_replies()]
    with OUT.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps({"item": item}, ensure_ascii=False) + "\n")
        for n, (item, label, reply) in enumerate(rows):
            fh.write(json.dumps({"case": f"{item['id']}/{label}/{n}", "item_id": item["id"], "reply": reply,
                                 **verdict(item, reply)}, ensure_ascii=False) + "\n")
    print(f"{len(items)} items, {len(rows)} replies -> {OUT}")


if __name__ == "__main__":
    main()
