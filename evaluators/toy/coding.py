"""Toy coding family: one-line Python functions from a templated spec, in HumanEval's format.

An item is a function header with a one-sentence docstring ("Return x plus 7.") and three
assert-based tests; the completion is the body ("    return x + 7\n"), as in HumanEval's
completion style. The flawed completion is the typical slip of a weak coder: the opposite or a
neighbouring operation (minus for plus, min for max, the tail for the head of a string), chosen
so that it fails at least one test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from evaluators.toy.task import ToyTask

FUNCTION_NAMES = ("solve", "compute", "transform", "helper", "process", "calc", "apply_rule", "answer")
NUMBER_ARGS = ("x", "n", "value")
TEXT_ARGS = ("s", "text", "word")
K_RANGE = {"number": (2, 20), "text": (2, 6)}  # inclusive: the constant in the spec (text inputs have 10-12 characters)
WORDS = ("apple", "river", "stone", "garden", "window", "planet", "candle", "forest", "silver", "dragon")

LEXICON = FUNCTION_NAMES + NUMBER_ARGS + TEXT_ARGS + WORDS  # words the zoo's tokenizer should keep whole


@dataclass(frozen=True)
class Operation:
    spec: str  # docstring, with {a} (the argument's name) and {k}
    body: str  # the correct return expression
    flawed: str  # the typical mistake
    kind: str  # "number" | "text": which argument names and test inputs it takes
    fn: Callable[[Any, int], Any]  # the correct result, computed here (never by executing generated text)
    flawed_fn: Callable[[Any, int], Any]


OPERATIONS: tuple[Operation, ...] = (
    Operation("Return {a} plus {k}.", "{a} + {k}", "{a} - {k}", "number", lambda v, k: v + k, lambda v, k: v - k),
    Operation("Return {a} minus {k}.", "{a} - {k}", "{a} + {k}", "number", lambda v, k: v - k, lambda v, k: v + k),
    Operation("Return {a} times {k}.", "{a} * {k}", "{a} + {k}", "number", lambda v, k: v * k, lambda v, k: v + k),
    Operation("Return {a} divided by {k}, rounded down.", "{a} // {k}", "{a} % {k}", "number",
              lambda v, k: v // k, lambda v, k: v % k),
    Operation("Return the remainder of {a} divided by {k}.", "{a} % {k}", "{a} // {k}", "number",
              lambda v, k: v % k, lambda v, k: v // k),
    Operation("Return True if {a} is greater than {k}.", "{a} > {k}", "{a} < {k}", "number",
              lambda v, k: v > k, lambda v, k: v < k),
    Operation("Return True if {a} is less than {k}.", "{a} < {k}", "{a} > {k}", "number",
              lambda v, k: v < k, lambda v, k: v > k),
    Operation("Return the larger of {a} and {k}.", "max({a}, {k})", "min({a}, {k})", "number",
              lambda v, k: max(v, k), lambda v, k: min(v, k)),
    Operation("Return the smaller of {a} and {k}.", "min({a}, {k})", "max({a}, {k})", "number",
              lambda v, k: min(v, k), lambda v, k: max(v, k)),
    Operation("Return the first {k} characters of {a}.", "{a}[:{k}]", "{a}[{k}:]", "text",
              lambda v, k: v[:k], lambda v, k: v[k:]),
    Operation("Return {a} without its first {k} characters.", "{a}[{k}:]", "{a}[:{k}]", "text",
              lambda v, k: v[k:], lambda v, k: v[:k]),
    Operation("Return the last {k} characters of {a}.", "{a}[-{k}:]", "{a}[:-{k}]", "text",
              lambda v, k: v[-k:], lambda v, k: v[:-k]),
    Operation("Return {a} repeated {k} times.", "{a} * {k}", "{a} + str({k})", "text",
              lambda v, k: v * k, lambda v, k: v + str(k)),
    Operation("Return {a} followed by the number {k}.", "{a} + str({k})", "{a} * {k}", "text",
              lambda v, k: v + str(k), lambda v, k: v * k),
)


def _test_inputs(op: Operation, k: int, rng: random.Random) -> list[Any]:
    """Three inputs on which the correct and the flawed body disagree at least once."""
    while True:
        if op.kind == "number":
            inputs = [rng.randint(-20, 60) for _ in range(3)]
        else:
            inputs = [rng.choice(WORDS) + rng.choice(WORDS) for _ in range(3)]
        if any(op.fn(v, k) != op.flawed_fn(v, k) for v in inputs):
            return inputs


def sample(rng: random.Random, index: int) -> ToyTask:
    """One coding task; `index` only names it (ToyCoding/<index>)."""
    op_index = rng.randrange(len(OPERATIONS))
    op = OPERATIONS[op_index]
    k = rng.randint(*K_RANGE[op.kind])
    arg = rng.choice(NUMBER_ARGS if op.kind == "number" else TEXT_ARGS)
    name = rng.choice(FUNCTION_NAMES)
    spec = op.spec.format(a=arg, k=k)
    prompt = f'def {name}({arg}):\n    """{spec}"""\n'
    inputs = _test_inputs(op, k, rng)
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({v!r}) == {op.fn(v, k)!r}\n" for v in inputs)
    answer = f"    return {op.body.format(a=arg, k=k)}\n"
    item = {
        "task_id": f"ToyCoding/{index}",
        "prompt": prompt,
        "entry_point": name,
        "canonical_solution": answer,
        "test": test,
    }
    return ToyTask(item=item, answer=answer, flawed_answer=f"    return {op.flawed.format(a=arg, k=k)}\n",
                   key=f"coding|{op_index}|{k}|{arg}")
