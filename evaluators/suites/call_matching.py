"""Score parsed function calls against BFCL's possible answers (its "AST" checker's rules, re-implemented).

An expected call is BFCL's ground-truth shape `{"func": {"param": [acceptable values...]}}`; a `""`
among a parameter's acceptable values marks it optional. A call passes when:
- its name is the expected one (`a.b` and `a_b` are the same name: many tool APIs forbid dots);
- every parameter the function's schema requires is given, and no parameter outside both the schema
  and the expected call is given; arguments are named (positional ones fail);
- each value has the schema type (`integer` int, `float` float or int, `string`/`any` str, `boolean`
  bool, `array`/`tuple` list, `dict` dict; JSON-schema `number`/`object` too) - or the type of the
  acceptable values, which is how BFCL marks a variable passed by name - and is one of the acceptable
  values: strings compared lower-cased without spaces and `,./-_*^` (BFCL's normalisation), lists
  element by element, dicts key by key;
- every expected parameter not marked optional is given.
Several expected calls (parallel) match the calls in any order (a perfect bipartite matching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from evaluators.suites.function_calls import FunctionCall, safe_repr

__all__ = ["MatchResult", "check_call", "match_calls", "same_function_name", "standardize_string"]

SCHEMA_TYPES: dict[str, type] = {
    "string": str, "any": str, "integer": int, "float": float, "number": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "object": dict,
}
_IGNORED_CHARACTERS = re.compile(r"[ ,./\-_*^]")
_SHOWN = 160  # characters of a value shown in a reason


@dataclass(frozen=True)
class MatchResult:
    passed: bool
    reason: str  # "ok" or why not


def standardize_string(text: str) -> str:
    """BFCL's string normalisation: "April 1, 2024" and "april 1 2024" compare equal."""
    return _IGNORED_CHARACTERS.sub("", text).lower().replace("'", '"')


def same_function_name(got: str, expected: str) -> bool:
    return got == expected or got.replace(".", "_") == expected.replace(".", "_")


def match_calls(calls: Sequence[FunctionCall], expected: Sequence[Mapping[str, Mapping[str, list]]],
                functions: Sequence[Mapping[str, Any]]) -> MatchResult:
    """Whether `calls` are exactly the `expected` calls, in any order, checked against the `functions` schemas."""
    if len(calls) != len(expected):
        return MatchResult(False, f"wrong number of calls: got {len(calls)} {_names(calls)}, "
                                  f"expected {len(expected)} {[_expected_name(e) for e in expected]}")
    failures = [[check_call(call, exp, functions) for call in calls] for exp in expected]
    assignment = _maximum_matching([[f is None for f in row] for row in failures])
    unmatched = [i for i, j in enumerate(assignment) if j is None]
    if not unmatched:
        return MatchResult(True, "ok")
    i = unmatched[0]
    name = _expected_name(expected[i])
    # Explain with the most telling candidate: an unmatched call of the same function, if any.
    taken = {j for j in assignment if j is not None}
    candidates = [j for j in range(len(calls)) if j not in taken] or list(range(len(calls)))
    same_name = [j for j in candidates if same_function_name(calls[j].name, name)]
    reason = failures[i][(same_name or candidates)[0]]
    if len(expected) > 1:
        reason = f"no call matches expected call {i + 1} of {len(expected)} ({name}): {reason}"
    return MatchResult(False, reason)


def check_call(call: FunctionCall, expected: Mapping[str, Mapping[str, list]],
               functions: Sequence[Mapping[str, Any]]) -> str | None:
    """None when `call` matches the one expected call, else the reason it does not."""
    if len(expected) != 1:
        raise ValueError(f"an expected call is a one-key dict {{function: {{param: [values]}}}}, got {dict(expected)!r}")
    (name, acceptable_by_param), = expected.items()
    if not same_function_name(call.name, name):
        return f"wrong function: got {call.name}, expected {name}"
    if call.positional:
        return f"positional arguments in the call to {call.name}: name every parameter"
    schema = _find_schema(functions, name)
    parameters = schema.get("parameters") or {}
    properties: Mapping[str, Any] | None = parameters.get("properties") if schema else None
    for param in parameters.get("required") or ():
        if param not in call.arguments:
            return f"missing parameter {param!r}"
    for param, value in call.arguments.items():
        if param not in acceptable_by_param or (properties is not None and param not in properties):
            return f"unexpected parameter {param!r}"
        spec = properties.get(param, {}) if properties is not None else {}
        problem = check_value(param, value, acceptable_by_param[param], spec)
        if problem:
            return problem
    for param, acceptable in acceptable_by_param.items():
        if param not in call.arguments and "" not in acceptable:
            return f"missing parameter {param!r} (expected one of {_show(acceptable)})"
    return None


def check_value(param: str, value: Any, acceptable: Sequence[Any], spec: Mapping[str, Any]) -> str | None:
    """None when `value` is acceptable for `param` (schema `spec`), else the reason."""
    type_name = spec.get("type")
    expected_type = SCHEMA_TYPES.get(type_name) if isinstance(type_name, str) else None
    items = spec.get("items") if isinstance(spec.get("items"), Mapping) else {}
    item_type = SCHEMA_TYPES.get(items.get("type")) if expected_type is list else None
    if expected_type is list and isinstance(value, tuple):
        value = list(value)
    if expected_type is float and type(value) is int:
        value = float(value)  # Python's own int -> float promotion, as BFCL allows
    if item_type is float and isinstance(value, list):
        value = [float(v) if type(v) is int else v for v in value]

    real = [a for a in acceptable if a != ""]
    answer_type = type(real[0]) if real else None
    # BFCL writes a variable passed by name as a string where the schema says another type.
    is_variable = expected_type is not None and answer_type is not None and answer_type is not expected_type

    if expected_type is not None:
        if type(value) is expected_type:
            if item_type is not None:
                allowed = {item_type} | {type(e) for a in real if isinstance(a, list) for e in a}
                wrong = [v for v in value if type(v) not in allowed]
                if wrong:
                    return (f"type of {param!r}: expected {type_name} of {items.get('type')}, "
                            f"got element {_show(wrong[0])} ({type(wrong[0]).__name__})")
        elif not (is_variable and type(value) is answer_type):
            return f"type of {param!r}: expected {type_name}, got {type(value).__name__} {_show(value)}"

    if is_variable:  # a variable's name is compared as written
        ok = any(_same(value, a) for a in real)
    elif isinstance(value, dict):
        problem = _check_dict(param, value, real)
        if problem:
            return problem
        ok = True
    elif isinstance(value, list) and item_type is dict:
        problem = _check_list_of_dicts(param, value, real)
        if problem:
            return problem
        ok = True
    elif isinstance(value, str):
        ok = standardize_string(value) in [standardize_string(a) for a in real if isinstance(a, str)]
    elif isinstance(value, list):
        ok = _standardize_list(value) in [_standardize_list(a) for a in real if isinstance(a, list)]
    else:
        ok = any(_same(value, a) for a in real)
    if not ok:
        return f"value of {param!r}: got {_show(value)} expected one of {_show(acceptable)}"
    return None


def _check_dict(param: str, value: Mapping[str, Any], candidates: Sequence[Any]) -> str | None:
    """A dict value passes when it fits one candidate, whose keys map to lists of acceptable values."""
    problem = f"value of {param!r}: got {_show(value)} expected one of {_show(candidates)}"
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            continue
        problem = None
        for key, item in value.items():
            if key not in candidate:
                problem = f"value of {param!r}: unexpected key {key!r}"
                break
            allowed = candidate[key] if isinstance(candidate[key], list) else [candidate[key]]
            if _standardize_item(item) not in [_standardize_item(a) for a in allowed]:
                problem = f"value of {param}[{key!r}]: got {_show(item)} expected one of {_show(allowed)}"
                break
        if problem is None:
            for key, allowed in candidate.items():
                allowed = allowed if isinstance(allowed, list) else [allowed]
                if key not in value and "" not in allowed:
                    problem = f"value of {param!r}: missing key {key!r}"
                    break
        if problem is None:
            return None
    return problem


def _check_list_of_dicts(param: str, value: list, candidates: Sequence[Any]) -> str | None:
    problem = f"value of {param!r}: got {_show(value)} expected one of {_show(candidates)}"
    for candidate in candidates:
        if not isinstance(candidate, list):
            continue
        if len(candidate) != len(value):
            problem = f"value of {param!r}: got {len(value)} dicts, expected {len(candidate)}"
            continue
        problems = [_check_dict(param, v, [c]) if isinstance(v, dict) else f"value of {param!r}: {_show(v)} is not a dict"
                    for v, c in zip(value, candidate)]
        first = next((p for p in problems if p), None)
        if first is None:
            return None
        problem = first
    return problem


def _standardize_item(item: Any) -> Any:
    return standardize_string(item) if isinstance(item, str) else item


def _standardize_list(items: list) -> list:
    return [_standardize_item(v) for v in items]


def _same(value: Any, acceptable: Any) -> bool:
    """Equality that keeps bool apart from int (True == 1 in Python)."""
    return value == acceptable and isinstance(value, bool) == isinstance(acceptable, bool)


def _find_schema(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for function in functions:
        if function.get("name") == name:
            return function
    for function in functions:
        if same_function_name(str(function.get("name", "")), name):
            return function
    return {}


def _maximum_matching(compatible: list[list[bool]]) -> list[int | None]:
    """For each row (expected call) the column (model call) it is matched to, or None (Kuhn's algorithm)."""
    n_cols = len(compatible[0]) if compatible else 0
    owner: list[int | None] = [None] * n_cols

    def augment(row: int, seen: set[int]) -> bool:
        for col in range(n_cols):
            if compatible[row][col] and col not in seen:
                seen.add(col)
                if owner[col] is None or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    for row in range(len(compatible)):
        augment(row, set())
    assignment: list[int | None] = [None] * len(compatible)
    for col, row in enumerate(owner):
        if row is not None:
            assignment[row] = col
    return assignment


def _expected_name(expected: Mapping[str, Any]) -> str:
    return next(iter(expected), "?")


def _names(calls: Sequence[FunctionCall]) -> list[str]:
    return [c.name for c in calls]


def _show(value: Any) -> str:
    text = safe_repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
