"""A seeded generator of RULER-style long-context tasks (no downloads: words from a committed list).

Three tasks, each an item `{"id", "task", "length", "context", "question", "answers", "depth"}`:
- `kv_retrieval`: many `key: value` lines (keys like `quiet-harbor-42`, 7-digit values); which value has key K?
- `variable_tracking`: `VAR ABCDE = 12345.` then `hops` re-assignments `VAR FGHIJ = VAR ABCDE.`, hidden with
  `chains - 1` distractor chains in filler sentences; what is the value of the last variable?
- `needle_qa`: one fact sentence (five templates) hidden in filler text next to `distractors` facts of the same
  template about other subjects; a question about the fact.

Lengths are in **characters** (no tokenizer is needed to build the data; English text runs about 4 characters
per token): a context is whole sentences (or lines) adding up to `length` characters, give or take one sentence. The answer occurs
exactly once in the context. Each item depends only on (seed, task, length, index), so ids and contents are
stable whatever else is generated.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterable

__all__ = ["TASKS", "generate_item", "generate_items", "word_lists"]

TASKS = ("kv_retrieval", "variable_tracking", "needle_qa")


@lru_cache(maxsize=1)
def word_lists() -> dict[str, list[str]]:
    """The committed word lists (evaluators/data/memory/words.json)."""
    text = resources.files("evaluators").joinpath("data/memory/words.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def generate_items(tasks: Iterable[str] = TASKS, lengths: Iterable[int] = (4000,), per_task: int = 50,
                   seed: int = 0, hops: int = 4, chains: int = 3, distractors: int = 2) -> list[dict[str, Any]]:
    """`per_task` items for every (task, length), in that order."""
    return [generate_item(task, length, index, seed, hops=hops, chains=chains, distractors=distractors)
            for task in tasks for length in lengths for index in range(per_task)]


def generate_item(task: str, length: int, index: int, seed: int = 0, *, hops: int = 4, chains: int = 3,
                  distractors: int = 2) -> dict[str, Any]:
    """Item `index` of `task` at `length` characters; the same arguments always give the same item."""
    if task not in _BUILDERS:
        raise ValueError(f"unknown memory task {task!r}; use one of {TASKS}")
    if length < 1 or index < 0 or hops < 1 or chains < 1 or distractors < 0:
        raise ValueError(f"need length >= 1, index >= 0, hops >= 1, chains >= 1, distractors >= 0; got "
                         f"length={length}, index={index}, hops={hops}, chains={chains}, distractors={distractors}")
    rng = random.Random(f"ruler/{seed}/{task}/{length}/{index}")  # str seeds hash with sha512: stable across runs
    context, question, answer, needle = _BUILDERS[task](rng, length, hops=hops, chains=chains, distractors=distractors)
    if len(re.findall(rf"(?<![\w-]){re.escape(answer)}(?![\w-])", context)) != 1:
        raise AssertionError(f"generator bug: the answer {answer!r} of {task}/{length}/{index} is not unique")
    return {
        "id": f"ruler-s{seed}/{task}/{length}/{index}",
        "task": task,
        "length": length,
        "context": context,
        "question": question,
        "answers": [answer],
        "depth": round(context.index(needle) / max(len(context), 1), 3),  # where the fact sits (0 start, 1 end)
    }


# -- the tasks ----------------------------------------------------------------------------------------

def _kv_retrieval(rng: random.Random, length: int, **_: Any) -> tuple[str, str, str, str]:
    words = word_lists()
    keys: list[str] = []
    values: list[str] = []
    seen_keys: set[str] = set()
    seen_values: set[str] = set()
    size = 0
    while size < length or len(keys) < 2:
        key = f"{rng.choice(words['filler_adjectives'])}-{rng.choice(words['filler_nouns'])}-{rng.randint(10, 99)}"
        value = str(rng.randint(1_000_000, 9_999_999))
        if key in seen_keys or value in seen_values:
            continue
        seen_keys.add(key), seen_values.add(value)
        keys.append(key), values.append(value)
        size += len(key) + len(value) + 2 + (len(keys) > 1)  # "key: value" lines joined by newlines
    target = rng.randrange(len(keys))
    lines = [f"{k}: {v}" for k, v in zip(keys, values)]
    return "\n".join(lines), f"What is the value of the key {keys[target]}?", values[target], lines[target]


def _variable_tracking(rng: random.Random, length: int, *, hops: int, chains: int, **_: Any) -> tuple[str, str, str, str]:
    names = _unique(rng, lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)), chains * (hops + 1))
    values = _unique(rng, lambda: str(rng.randint(10_000, 99_999)), chains)
    statements: list[list[str]] = []
    for c in range(chains):
        chain = names[c * (hops + 1):(c + 1) * (hops + 1)]
        statements.append([f"VAR {chain[0]} = {values[c]}."] +
                          [f"VAR {chain[h]} = VAR {chain[h - 1]}." for h in range(1, hops + 1)])
    sentences = _filler(rng, length - sum(len(s) + 1 for chain in statements for s in chain))
    # Each chain keeps its order; chains interleave at random positions in the filler.
    slots = sorted(rng.sample(range(len(sentences) + len(statements) * (hops + 1)), len(statements) * (hops + 1)))
    order = [c for c in range(chains) for _ in range(hops + 1)]
    rng.shuffle(order)
    cursor = [0] * chains
    placed: dict[int, str] = {}
    for slot, c in zip(slots, order):
        placed[slot] = statements[c][cursor[c]]
        cursor[c] += 1
    merged, filler_iter = [], iter(sentences)
    for position in range(len(sentences) + len(placed)):
        merged.append(placed[position] if position in placed else next(filler_iter))
    last = names[hops]
    question = f"What is the value of VAR {last}? Follow the chain of assignments back to a number."
    return _join(rng, merged), question, values[0], statements[0][0]


_NEEDLES: list[tuple[str, str, str, str]] = [
    # (subject slot, answer slot, fact, question): {s} subject, {a} answer
    ("name", "city", "{s} was born in {a}.", "In which city was {s} born?"),
    ("name", "instrument", "{s} plays the {a} every Sunday.", "Which instrument does {s} play every Sunday?"),
    ("box", "color", "The key to the {s} is hidden under the {a} rug.", "Under which rug is the key to the {s} hidden?"),
    ("name", "codeword", "The password of {s}'s locker is {a}.", "What is the password of {s}'s locker?"),
    ("name", "number", "{s} keeps exactly {a} marbles in a jar.", "How many marbles does {s} keep in a jar?"),
]


def _needle_qa(rng: random.Random, length: int, *, distractors: int, **_: Any) -> tuple[str, str, str, str]:
    subject_slot, answer_slot, fact, question = rng.choice(_NEEDLES)
    subjects = _unique(rng, lambda: _slot(rng, subject_slot), distractors + 1)
    answers = _unique(rng, lambda: _slot(rng, answer_slot), distractors + 1)
    facts = [fact.format(s=s, a=a) for s, a in zip(subjects, answers)]
    sentences = _filler(rng, length - sum(len(f) + 1 for f in facts))
    for f in facts:
        sentences.insert(rng.randint(0, len(sentences)), f)
    return _join(rng, sentences), question.format(s=subjects[0]), answers[0], facts[0]


_BUILDERS: dict[str, Callable[..., tuple[str, str, str, str]]] = {
    "kv_retrieval": _kv_retrieval, "variable_tracking": _variable_tracking, "needle_qa": _needle_qa,
}


# -- text pieces --------------------------------------------------------------------------------------

def _slot(rng: random.Random, kind: str) -> str:
    words = word_lists()
    if kind == "name":
        return rng.choice(words["names"])
    if kind == "city":
        return rng.choice(words["cities"])
    if kind == "instrument":
        return rng.choice(words["instruments"])
    if kind == "color":
        return rng.choice(words["colors"])
    if kind == "box":
        return f"{rng.choice(words['materials'])} {rng.choice(words['containers'])}"
    if kind == "codeword":  # a made-up word: never in the filler
        return "".join(rng.choice(words["syllables"]) for _ in range(3)) + rng.choice("nrlsk")
    if kind == "number":
        return str(rng.randint(100, 9999))
    raise ValueError(f"unknown slot {kind!r}")


def _unique(rng: random.Random, draw: Callable[[], str], count: int) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        value = draw()
        if value not in out:
            out.append(value)
    return out


def _filler(rng: random.Random, length: int) -> list[str]:
    """Grammatical nonsense sentences from the filler lists, at least `length` characters in all."""
    words = word_lists()
    noun, verb, adj = words["filler_nouns"], words["filler_verbs"], words["filler_adjectives"]
    adv, prep = words["filler_adverbs"], words["filler_prepositions"]
    patterns = [
        lambda c: f"The {c(adj)} {c(noun)} {c(verb)} the {c(noun)} {c(prep)} the {c(noun)}.",
        lambda c: f"A {c(adj)} {c(noun)} {c(adv)} {c(verb)} the {c(adj)} {c(noun)}.",
        lambda c: f"{c(prep).capitalize()} the {c(noun)}, the {c(noun)} {c(verb)} a {c(adj)} {c(noun)}.",
        lambda c: f"Every {c(noun)} {c(verb)} the {c(noun)} {c(adv)}.",
    ]
    sentences: list[str] = []
    size = 0
    while size < length:
        sentence = rng.choice(patterns)(rng.choice)
        sentences.append(sentence)
        size += len(sentence) + 1
    return sentences


def _join(rng: random.Random, sentences: list[str]) -> str:
    """Sentences joined by spaces, with a paragraph break after about every fifth."""
    parts = []
    for i, sentence in enumerate(sentences):
        end = "\n" if rng.random() < 0.2 and i < len(sentences) - 1 else " "
        parts.append(sentence + (end if i < len(sentences) - 1 else ""))
    return "".join(parts)
