"""Read the function calls out of a model's reply, in Python call syntax or JSON.

Accepted forms (alone, inside a fenced code block, inside `<tool_call>` tags, or embedded in prose):

- Python calls: `[get_weather(city="Paris"), math.hypot(x=3, y=4)]`, a bare `f(a=1)`, `f(a=1), g(b=2)`,
  or one call per line. Values are literals; a bare name (`unit=celsius`) reads as the string of
  that name and arithmetic on numbers (`x=2*3`) is computed, as BFCL's decoder does.
- JSON: `{"name": "f", "arguments": {...}}` (also `"parameters"`/`"args"`, arguments as a JSON
  string, OpenAI's `{"function": {...}}` and `{"tool_calls": [...]}`), BFCL's own `{"f": {"a": 1}}`,
  or a list of any of these. Python-literal dicts (single quotes, True/None) are read too.

`parse_calls` returns the calls ([] for an explicit empty list) or raises `CallParseError` saying why.
With `embedded=False` only an explicit reply counts (the whole reply, a fenced block or a `<tool_call>` tag):
a call written inside prose ("calling get_weather() would not help") is then a mention, not a call.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

__all__ = ["CallParseError", "FunctionCall", "parse_calls", "safe_repr"]


class CallParseError(ValueError):
    """The reply holds no function call in a form we can read."""


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    positional: tuple[Any, ...] = ()  # BFCL scores named arguments only; kept so the matcher can say so

    def render(self) -> str:
        parts = [safe_repr(v) for v in self.positional] + [f"{k}={safe_repr(v)}" for k, v in self.arguments.items()]
        return f"{self.name}({', '.join(parts)})"


def safe_repr(value: Any) -> str:
    """repr(), except for values Python refuses to print (an int of more than 4300 digits inside them)."""
    try:
        return repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to print>"


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
# A call start in prose: a whole identifier right before "(" (so "a function (sorry)" is not a call),
# not a definition ("def f(x):" in a code block the model wrote instead of calling).
_CALL_START = re.compile(r"(?<![\w.])(?<!def )(?<!class )[A-Za-z_][\w.]*\(")
_MAX_EMBEDDED_TRIES = 200  # bounds the prose search on long replies


def parse_calls(text: str, embedded: bool = True) -> list["FunctionCall"]:
    """The function calls in `text`; raises CallParseError when there is none in a readable form.

    `embedded`: also look for calls inside prose (brackets or a call in a sentence). Right when the reply
    is scored against the expected calls; wrong when only "is this a call at all" is asked.
    """
    text = _THINK.sub("", text).strip()
    if not text:
        raise CallParseError("empty output")

    tagged = _TOOL_CALL.findall(text)
    if tagged:
        calls: list[FunctionCall] = []
        for block in tagged:
            calls.extend(_parse_snippet(block.strip()))
        return calls

    first_error: CallParseError | None = None
    for candidate in _candidates(text, embedded):
        try:
            return _parse_snippet(candidate)
        except CallParseError as exc:
            first_error = first_error or exc
    raise CallParseError(f"no function call found ({first_error})" if first_error else "no function call found")


def _candidates(text: str, embedded: bool = True) -> Iterator[str]:
    """Snippets that may hold the calls, most explicit first: fenced blocks, the whole reply, spans in the prose.

    Spans are looked for outside code blocks only: a block that is not a list of calls is a program
    the model wrote, and the calls inside it are not calls the model made.
    """
    for _lang, body in _FENCE.findall(text):
        if body.strip():
            yield body.strip()
    yield text
    if not embedded:
        return
    prose = _FENCE.sub(" ", text)
    for open_, close in (("[", "]"), ("{", "}")):
        start, end = prose.find(open_), prose.rfind(close)
        if 0 <= start < end:
            yield prose[start:end + 1]
    # A call embedded in prose: try each call start against the closing parentheses after it, longest first.
    closes = [m.end() for m in re.finditer(r"\)", prose)]
    tries = 0
    for match in _CALL_START.finditer(prose):
        for end in reversed([c for c in closes if c > match.end()]):
            tries += 1
            if tries > _MAX_EMBEDDED_TRIES:
                return
            yield prose[match.start():end]


def _parse_snippet(snippet: str) -> list[FunctionCall]:
    """Python call syntax first (it is BFCL's format), then JSON / Python-literal dicts."""
    python_error = None
    try:
        return _parse_python(snippet)
    except CallParseError as exc:
        python_error = exc
    try:
        return _parse_json(snippet)
    except CallParseError as exc:
        raise CallParseError(f"not Python calls ({python_error}); not JSON calls ({exc})") from None


# -- Python call syntax -----------------------------------------------------------------------------

def _parse_python(snippet: str) -> list[FunctionCall]:
    try:
        tree = ast.parse(snippet, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CallParseError(f"invalid Python syntax: {getattr(exc, 'msg', type(exc).__name__)}") from None
    if not tree.body:
        raise CallParseError("no statement")
    calls: list[FunctionCall] = []
    for statement in tree.body:
        if not isinstance(statement, ast.Expr):
            raise CallParseError(f"a {type(statement).__name__} statement is not a call")
        calls.extend(_calls_in(statement.value))
    return calls


def _calls_in(node: ast.expr) -> list[FunctionCall]:
    if isinstance(node, ast.Call):
        return [_call(node)]
    if isinstance(node, (ast.List, ast.Tuple)):
        calls = []
        for element in node.elts:
            if not isinstance(element, ast.Call):
                raise CallParseError(f"list element {ast.unparse(element)[:60]!r} is not a call")
            calls.append(_call(element))
        return calls
    raise CallParseError(f"{ast.unparse(node)[:60]!r} is not a call or a list of calls")


def _call(node: ast.Call) -> FunctionCall:
    name = _dotted_name(node.func)
    if name is None:
        raise CallParseError(f"cannot read a function name from {ast.unparse(node.func)[:60]!r}")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise CallParseError(f"**-unpacking in the call to {name} is not a literal argument")
        arguments[keyword.arg] = _value(keyword.value)
    positional = tuple(_value(arg) for arg in node.args)
    return FunctionCall(name, arguments, positional)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted_name(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


_ARITHMETIC: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _value(node: ast.expr) -> Any:
    """A literal value; names read as their own text (BFCL's 'variable' arguments); numbers' arithmetic computed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.Set):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise CallParseError("**-unpacking inside a dict argument is not a literal")
        try:
            return {_hashable(_value(k)): _value(v) for k, v in zip(node.keys, node.values)}
        except TypeError:
            raise CallParseError("a dict argument has a key that is not a literal") from None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _value(node.left), _value(node.right)
        if _is_number(left) and _is_number(right):
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10**6):
                return ast.unparse(node)  # refuse to compute huge powers from model output
            try:
                return _ARITHMETIC[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError, ValueError):
                return ast.unparse(node)
    return ast.unparse(node)  # anything else (attributes, calls, comprehensions) reads as its source text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# -- JSON ---------------------------------------------------------------------------------------------

def _parse_json(snippet: str) -> list[FunctionCall]:
    try:
        data = json.loads(snippet)
    except (json.JSONDecodeError, RecursionError):
        try:
            data = ast.literal_eval(snippet)  # Python-literal dicts: single quotes, True, None
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise CallParseError("invalid JSON") from None
    return _calls_from_data(data)


_ARGUMENT_KEYS = ("arguments", "parameters", "args")


def _calls_from_data(data: Any) -> list[FunctionCall]:
    if isinstance(data, list):
        calls = []
        for element in data:
            calls.extend(_calls_from_data(element))
        return calls
    if not isinstance(data, dict):
        raise CallParseError(f"a JSON {type(data).__name__} is not a call")
    if isinstance(data.get("tool_calls"), list):
        return _calls_from_data(data["tool_calls"])
    for wrapper in ("function", "function_call"):
        if isinstance(data.get(wrapper), dict):
            return _calls_from_data(data[wrapper])
    if "name" in data:
        if not isinstance(data["name"], str):
            raise CallParseError(f"the call's name {data['name']!r} is not a string")
        present = [k for k in _ARGUMENT_KEYS if k in data]
        arguments = data[present[0]] if present else {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise CallParseError(f"the arguments of {data['name']} are a string that is not JSON") from None
        if not isinstance(arguments, dict):
            raise CallParseError(f"the arguments of {data['name']} are not an object")
        return [FunctionCall(data["name"], dict(arguments))]
    if len(data) == 1:  # BFCL's ground-truth shape: {"func": {"param": value}}
        (name, arguments), = data.items()
        if isinstance(name, str) and isinstance(arguments, dict):
            return [FunctionCall(name, dict(arguments))]
    raise CallParseError("a JSON object without a 'name' key is not a call")
