"""`scoring: bfcl` for the tool_use suite: bfcl-eval 2026.3.23's verdicts, re-implemented without its SDKs.

What a verdict is made of, as in bfcl-eval (read from its source; none of its code is imported):

1. The reply as a Qwen prompting handler hands it over: text after the last `</think>` (leading newlines dropped).
2. The prompting-model decoder (`default_decode_ast_prompting`): strip backticks, newlines and spaces at both
   ends, wrap in `[...]` when not already, and parse as ONE Python expression: a list whose elements are all
   calls. Each call becomes `{name: {keyword: value}}`; **positional arguments are
   dropped** (so a required parameter given positionally is missing), a dotted name is kept dotted. Values:
   literals; a bare name reads as its text; `-x` of a constant is its negation (bfcl-eval negates for every
   unary operator, so `+5` and `not 5` read as -5); a subscript reads as its source text; a call without
   keywords as its source text, a call with keywords as a nested `{name: {...}}`; arithmetic (`BinOp`) is
   evaluated; attributes (`math.pi`), f-strings, comparisons, lambdas, sets and `**` in a dict fail the decode.
3. Relevance: on `*irrelevance*` categories an item passes when the decode fails or yields no call; on
   `*relevance*` (live_relevance) when it yields at least one call, whatever its name and arguments.
4. The AST checker, chosen by category name: `parallel` in it -> every expected call matched by some output
   call in any order (greedily: each expected call takes the FIRST unused output call that fits), `multiple` ->
   exactly one call checked against the one expected call, else (simple) exactly one call checked against the
   FIRST function of the item. One call fits when: same name (exactly; no `_` for `.`), every schema-required
   parameter present, no parameter outside both the schema's properties and the expected call, each value of
   the schema type (`integer` int, `float` float or int -> float, `string`/`any` str, `boolean` bool,
   `array`/`tuple` list (a tuple counts for `tuple`), `dict` dict; array elements checked one level deep
   against the possible answers' lists, with no int -> float there), or of the possible answer's type (a
   "variable"); and the value is among the possible answers: strings compared after removing ` ,./-_*^`,
   lower-casing and `'` -> `"`; lists element-wise the same; dicts key by key (optional keys marked with "");
   other values with Python's `==`. A possible answer list holding "" marks the parameter optional.

Where bfcl-eval cannot be reproduced safely, a verdict here is a documented disagreement (notes: bfcl.md):
bfcl-eval `eval()`s the source of every arithmetic argument, so `x=abs(-3)+1` or a name of its own module
in an expression evaluates there (running the model's code) while here only literals are computed; huge
results (`2**10**9`) that would hang bfcl-eval fail the decode here. Where bfcl-eval's checker would stop with an
exception (a schema type it does not know, an expected function missing from the item), the item fails here
with a reason saying so.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from evaluators.suites.call_matching import standardize_string  # the same rule: ` ,./-_*^` out, lower, ' -> "
from evaluators.suites.function_calls import safe_repr

__all__ = ["BfclDecodeError", "BfclVerdict", "bfcl_verdict", "decode_prompting", "standardize_string",
           "strip_reasoning"]

PYTHON_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list, "dict": dict,
    "any": str,
}
_NESTED_TYPES = ("array", "tuple")
_MAX_BITS = 1 << 20  # integer results bigger than this many bits are refused, not computed
_MAX_ITEMS = 10**7  # and so are repeated strings / lists longer than this
_SHOWN = 160


class BfclDecodeError(ValueError):
    """bfcl-eval's prompting decoder would raise on this reply: no call can be read from it."""


@dataclass(frozen=True)
class BfclVerdict:
    passed: bool
    reason: str  # "ok" or bfcl-eval's error kind and why
    calls: tuple[Mapping[str, Any], ...] = ()  # the decoded calls, [{name: {param: value}}]


# -- the reply and the decoder -------------------------------------------------------------------------

def strip_reasoning(text: str) -> str:
    """The reply as bfcl-eval's Qwen prompting handler keeps it: after the last `</think>`, leading newlines off."""
    if "</think>" in text:
        return text.split("</think>")[-1].lstrip("\n")
    return text


def decode_prompting(text: str) -> list[dict[str, dict[Any, Any]]]:
    """The calls in `text` read as bfcl-eval's `default_decode_ast_prompting` reads them; BfclDecodeError if none."""
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    text = text.strip().strip("'")  # a no-op once bracketed; kept because the reference does it
    try:
        body = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise BfclDecodeError(f"invalid Python syntax: {getattr(exc, 'msg', type(exc).__name__)}") from None
    # Bracketed, the text is a list display or not a call list at all (a tuple `[f()], [g()]` or a set has a
    # non-call element, or cannot start with "["; the reference fails those too).
    if not isinstance(body, ast.List):
        raise BfclDecodeError(f"a {type(body).__name__} is not a list of calls")
    bad = [e for e in body.elts if not isinstance(e, ast.Call)]
    if bad:
        raise BfclDecodeError(f"list element {_source(bad[0])!r} is not a call")
    return [_call(e) for e in body.elts]


def _call(node: ast.Call) -> dict[str, dict[Any, Any]]:
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    # A keyword of `**x` has no name: bfcl-eval files it under None, which the checker then calls unexpected.
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value) for kw in node.keywords}}


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        # The reference negates the operand's constant whatever the operator; anything else has no `.value`.
        if not isinstance(node.operand, ast.Constant):
            raise BfclDecodeError(f"unary operator on {_source(node.operand)!r}")
        try:
            return -node.operand.value
        except TypeError:
            raise BfclDecodeError(f"cannot negate {node.operand.value!r}") from None
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                raise BfclDecodeError("** inside a dict argument")
            k = _value(key)
            try:
                out[k] = _value(value)
            except TypeError:
                raise BfclDecodeError(f"unhashable dict key {k!r}") from None
        return out
    if isinstance(node, ast.BinOp):
        return _evaluate(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else _call(node)
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.Subscript):
        return f"{ast.unparse(node.value)}[{ast.unparse(node.slice)}]"
    raise BfclDecodeError(f"unsupported argument {_source(node)!r} ({type(node).__name__})")


# Arithmetic: bfcl-eval runs `eval` on the expression's source. Literal operands are computed here with
# Python's own operators; names, calls and attributes (which `eval` would run) fail the decode instead.
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
    ast.MatMult: operator.matmul,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert,
}


def _evaluate(node: ast.AST) -> Any:
    """Python's value of a literal expression (inside `eval`, unary operators mean what they say)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        values = [_evaluate(e) for e in node.elts]
        return _apply({ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)], values)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise BfclDecodeError("** inside an arithmetic expression is not computed here")
        return _apply(dict, [(_evaluate(k), _evaluate(v)) for k, v in zip(node.keys, node.values)])
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _apply(_UNARY[type(node.op)], _evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        _refuse_huge(node.op, left, right)
        return _apply(_BINARY[type(node.op)], left, right)
    raise BfclDecodeError(f"{_source(node)!r} in an arithmetic argument is not computed here (bfcl-eval would "
                          "eval it)")


def _apply(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as exc:  # the reference's eval raises the same error, which fails its decode
        raise BfclDecodeError(f"arithmetic failed: {type(exc).__name__}: {exc}") from None


def _refuse_huge(op: ast.operator, left: Any, right: Any) -> None:
    """Results too big to compute quickly (bfcl-eval would try, and hang) fail the decode."""
    ints = all(isinstance(v, int) for v in (left, right))
    if isinstance(op, ast.Pow) and ints and right > 0 and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > _MAX_BITS:
        raise BfclDecodeError("a power too large to compute")
    if isinstance(op, ast.LShift) and ints and right > _MAX_BITS:
        raise BfclDecodeError("a shift too large to compute")
    if isinstance(op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int) and count * max(len(seq), 1) > _MAX_ITEMS:
                raise BfclDecodeError("a repetition too large to compute")


def _source(node: ast.AST) -> str:
    return ast.unparse(node)[:60]


# -- relevance and the AST checker -------------------------------------------------------------------

def bfcl_verdict(category: str, completion: str, functions: Sequence[Mapping[str, Any]],
                 ground_truth: Sequence[Mapping[str, Mapping[str, list]]]) -> BfclVerdict:
    """bfcl-eval's verdict on one reply to one item of `category` (a BFCL category name). Pure."""
    text = strip_reasoning(completion)
    try:
        calls = decode_prompting(text)
    except (ValueError, RecursionError, MemoryError) as exc:  # BfclDecodeError, or the parser's own limits
        if "irrelevance" in category:
            return BfclVerdict(True, "ok")
        if "relevance" in category:
            return BfclVerdict(False, f"relevance: no call decoded ({exc})")
        return BfclVerdict(False, f"decoder failed: {exc}")
    decoded = tuple(calls)
    if "irrelevance" in category:
        return BfclVerdict(not calls, "ok" if not calls else f"irrelevance: called {_names(calls)}", decoded)
    if "relevance" in category:
        return BfclVerdict(bool(calls), "ok" if calls else "relevance: no call decoded (empty list)", decoded)
    try:
        error = _check(category, calls, functions, ground_truth)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # bfcl-eval's checker raises on the same input (it would stop the whole evaluation); the item fails.
        error = f"bfcl-eval's checker cannot score this item ({type(exc).__name__}: {exc})"
    return BfclVerdict(error is None, error or "ok", decoded)


def _check(category: str, calls: list[dict], functions: Sequence[Mapping[str, Any]],
           expected: Sequence[Mapping[str, Mapping[str, list]]]) -> str | None:
    if "parallel" in category:
        if len(calls) != len(expected):
            return f"wrong number of functions: got {len(calls)}, expected {len(expected)}"
        used: list[int] = []
        for i, answer in enumerate(expected):
            description = _find_description(functions, next(iter(answer)))
            errors = []
            for index, call in enumerate(calls):
                if index in used:
                    continue
                error = _check_one(description, call, answer)
                if error is None:
                    used.append(index)
                    break
                errors.append(error)
            else:
                return f"no unused call matches expected call {i + 1} ({next(iter(answer))}): {errors[0] if errors else ''}"
        return None
    if "multiple" in category:
        if len(calls) != len(expected):
            return f"wrong number of functions: got {len(calls)}, expected {len(expected)}"
        return _check_one(_find_description(functions, next(iter(expected[0]))), calls[0], expected[0])
    if len(calls) != 1:
        return f"wrong number of functions: got {len(calls)}, expected 1"
    return _check_one(functions[0], calls[0], expected[0])


def _find_description(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for function in functions:
        if function["name"] == name:
            return function
    raise KeyError(f"no function named {name!r} among the item's functions")


def _check_one(description: Mapping[str, Any], call: Mapping[str, Mapping[Any, Any]],
               expected: Mapping[str, Mapping[str, list]]) -> str | None:
    """bfcl-eval's simple_function_checker: None when `call` fits, else why not."""
    possible = next(iter(expected.values()))
    name = description["name"]
    properties = description["parameters"]["properties"]
    required = description["parameters"]["required"]
    if name not in call:
        return f"wrong function name: expected {name}, got {next(iter(call), '')}"
    arguments = call[name]
    for param in required:
        if param not in arguments:
            return f"missing required parameter {param!r}"
    for param, value in arguments.items():
        if param not in properties or param not in possible:
            return f"unexpected parameter {param!r}"
        type_name = properties[param]["type"]
        expected_type = PYTHON_TYPES[type_name]
        nested_type = PYTHON_TYPES[properties[param]["items"]["type"]] if type_name in _NESTED_TYPES else None
        if type_name == "tuple" and type(value) is tuple:
            value = list(value)
        if type_name == "float" and type(value) is int:
            value = float(value)  # Python's own int -> float promotion (top level only)
        ok, is_variable = _type_check(value, possible[param], expected_type, nested_type)
        if not ok:
            return f"type of {param!r}: expected {type_name}, got {type(value).__name__} {_show(value)}"
        problem = None if is_variable else _structured_problem(value, possible[param], expected_type, nested_type)
        if problem is not None:
            return f"value of {param!r}: {problem}"
        # A variable (and a number or boolean) compares with Python's ==, strings unnormalised.
        if (is_variable or expected_type not in (dict, list, str)) and value not in possible[param]:
            return f"value of {param!r}: got {_show(value)}, expected one of {_show(possible[param])}"
    for param in possible:
        if param not in arguments and "" not in possible[param]:
            return f"parameter {param!r} not given and not optional"
    return None


def _structured_problem(value: Any, possible: Sequence[Any], expected_type: type,
                        nested_type: type | None) -> str | None:
    """The value checks bfcl-eval gives dicts, lists of dicts, strings and lists (other types: None here)."""
    if expected_type is dict:
        return _dict_problem(value, possible)
    if expected_type is list and nested_type is dict:
        return _list_of_dicts_problem(value, possible)
    if expected_type is str:
        if standardize_string(value) in [standardize_string(a) for a in possible if type(a) is str]:
            return None
    elif expected_type is list:
        if _standardized(value) in [_standardized(a) for a in possible]:
            return None
    else:
        return None
    return f"got {_show(value)}, expected one of {_show(possible)} (after normalisation)"


def _answer_type(possible: Sequence[Any]) -> type | None:
    for answer in possible:
        if answer != "":
            return type(answer)
    return None


def _type_check(value: Any, possible: Sequence[Any], expected_type: type, nested_type: type | None) -> tuple[bool, bool]:
    """(type ok, read as a variable) - bfcl-eval's type_checker, nested one level for arrays."""
    answer_type = _answer_type(possible)
    is_variable = answer_type is not None and answer_type is not expected_type
    if type(value) is expected_type:
        if nested_type is None:
            return True, is_variable
        for answer in possible:
            fits = True  # an answer that is not a list (e.g. "" of an optional array) constrains nothing
            if type(answer) is list:
                fits = all(_type_check(item, answer, nested_type, None)[0] for item in value)
            if fits:
                return True, is_variable
        return False, is_variable
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, is_variable


def _standardized(items: Sequence[Any]) -> list[Any]:
    return [standardize_string(v) if type(v) is str else v for v in items]


def _dict_problem(value: Mapping[Any, Any], candidates: Sequence[Any]) -> str | None:
    problem = "value: no possible dict"
    for candidate in candidates:
        if candidate == "":
            continue
        problem = None
        for key, item in value.items():
            if key not in candidate:
                problem = f"unexpected dict key {key!r}"
                break
            allowed = [standardize_string(a) if type(a) is str else a for a in candidate[key]]
            if (standardize_string(item) if type(item) is str else item) not in allowed:
                problem = f"value of dict key {key!r}: got {_show(item)}, expected one of {_show(allowed)}"
                break
        for key, allowed in candidate.items():
            if key not in value and "" not in allowed:
                problem = problem or f"missing dict key {key!r}"
                break
        if problem is None:
            return None
    return problem


def _list_of_dicts_problem(value: Sequence[Any], candidates: Sequence[Any]) -> str | None:
    problem = "value: no possible list of dicts"
    for candidate in candidates:
        if len(value) != len(candidate):
            problem = "wrong number of dicts in the list"
            continue
        problem = next((p for v, c in zip(value, candidate) if (p := _dict_problem(v, [c])) is not None), None)
        if problem is None:
            return None
    return problem


def _names(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    return [next(iter(c)) for c in calls]


def _show(value: Any) -> str:
    text = safe_repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
