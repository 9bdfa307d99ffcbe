"""Toy coding family: one-line Python functions from a templated spec, in HumanEval's format.

An item is a function header with a one-sentence docstring ("Return x doubled.") and three
assert-based tests; the completion is the body ("    return x * 2\n"), as in HumanEval's
completion style. The flawed completion is the typical slip of a weak coder: the opposite or a
neighbouring operation (minus for plus, lower for upper case, the last for the first character),
chosen so that it fails at least one test.

A problem is the whole signature (operation, argument and function name): held-out problems are
signatures never trained on. Specs carry no free constants: measured with "Return x plus {k}"
specs (k = 2-20), the zoo's 1M-parameter coder never learned to copy a constant from the
docstring, answered every held-out problem with a constant it knew, and its GRPO agent scored
the base's 7.8 % pass@1; reading the operation from the spec is the skill it can learn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from evaluators.toy.task import ToyTask

FUNCTION_NAMES = ("solve", "compute", "transform", "helper", "process", "calc", "apply_rule", "answer")
NUMBER_ARGS = ("x", "n", "value")
TEXT_ARGS = ("s", "text", "word")
WORDS = ("apple", "river", "stone", "garden", "window", "planet", "candle", "forest", "silver", "dragon")

LEXICON = FUNCTION_NAMES + NUMBER_ARGS + TEXT_ARGS + WORDS  # words the zoo's tokenizer should keep whole


@dataclass(frozen=True)
class Operation:
    spec: str  # docstring, with {a} (the argument's name)
    body: str  # the correct return expression
    flawed: str  # the typical mistake
    kind: str  # "number" | "text": which argument names and test inputs it takes
    fn: Callable[[Any], Any]  # the correct result, computed here (never by executing generated text)
    flawed_fn: Callable[[Any], Any]


OPERATIONS: tuple[Operation, ...] = (
    Operation("Return {a} doubled.", "{a} * 2", "{a} ** 2", "number", lambda v: v * 2, lambda v: v ** 2),
    Operation("Return {a} squared.", "{a} ** 2", "{a} * 2", "number", lambda v: v ** 2, lambda v: v * 2),
    Operation("Return {a} plus one.", "{a} + 1", "{a} - 1", "number", lambda v: v + 1, lambda v: v - 1),
    Operation("Return {a} minus one.", "{a} - 1", "{a} + 1", "number", lambda v: v - 1, lambda v: v + 1),
    Operation("Return the negative of {a}.", "-{a}", "abs({a})", "number", lambda v: -v, lambda v: abs(v)),
    Operation("Return the absolute value of {a}.", "abs({a})", "-{a}", "number", lambda v: abs(v), lambda v: -v),
    Operation("Return True if {a} is even.", "{a} % 2 == 0", "{a} % 2 == 1", "number",
              lambda v: v % 2 == 0, lambda v: v % 2 == 1),
    Operation("Return True if {a} is odd.", "{a} % 2 == 1", "{a} % 2 == 0", "number",
              lambda v: v % 2 == 1, lambda v: v % 2 == 0),
    Operation("Return True if {a} is positive.", "{a} > 0", "{a} < 0", "number", lambda v: v > 0, lambda v: v < 0),
    Operation("Return True if {a} is negative.", "{a} < 0", "{a} > 0", "number", lambda v: v < 0, lambda v: v > 0),
    Operation("Return {a} reversed.", "{a}[::-1]", "{a}[1:]", "text", lambda v: v[::-1], lambda v: v[1:]),
    Operation("Return {a} in upper case.", "{a}.upper()", "{a}.lower()", "text", lambda v: v.upper(), lambda v: v.lower()),
    Operation("Return the length of {a}.", "len({a})", "len({a}) - 1", "text", lambda v: len(v), lambda v: len(v) - 1),
    Operation("Return the first character of {a}.", "{a}[0]", "{a}[-1]", "text", lambda v: v[0], lambda v: v[-1]),
    Operation("Return the last character of {a}.", "{a}[-1]", "{a}[0]", "text", lambda v: v[-1], lambda v: v[0]),
    Operation("Return {a} without its first character.", "{a}[1:]", "{a}[:-1]", "text",
              lambda v: v[1:], lambda v: v[:-1]),
)


def _test_inputs(op: Operation, rng: random.Random) -> list[Any]:
    """Three inputs on which the correct and the flawed body disagree at least once."""
    while True:
        if op.kind == "number":
            inputs = [rng.randint(-20, 60) for _ in range(3)]
        else:
            inputs = [rng.choice(WORDS) + rng.choice(WORDS) for _ in range(3)]
        if any(op.fn(v) != op.flawed_fn(v) for v in inputs):
            return inputs


def sample(rng: random.Random, index: int) -> ToyTask:
    """One coding task; `index` only names it (ToyCoding/<index>)."""
    op_index = rng.randrange(len(OPERATIONS))
    op = OPERATIONS[op_index]
    arg = rng.choice(NUMBER_ARGS if op.kind == "number" else TEXT_ARGS)
    name = rng.choice(FUNCTION_NAMES)
    prompt = f'def {name}({arg}):\n    """{op.spec.format(a=arg)}"""\n'
    inputs = _test_inputs(op, rng)
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({v!r}) == {op.fn(v)!r}\n" for v in inputs)
    answer = f"    return {op.body.format(a=arg)}\n"
    item = {
        "task_id": f"ToyCoding/{index}",
        "prompt": prompt,
        "entry_point": name,
        "canonical_solution": answer,
        "test": test,
    }
    return ToyTask(item=item, answer=answer, flawed_answer=f"    return {op.flawed.format(a=arg)}\n",
                   key=f"coding|{op_index}|{arg}|{name}")
