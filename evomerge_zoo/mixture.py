"""Streams of encoded training data: suite prompts of fresh toy tasks, and the base's pretraining mixture.

Training tasks are drawn from a seeded stream that never yields a problem of the committed search
or test data (`evaluators.toy.splits`); they are loaded through the family's suite in chunks, so
their prompts are exactly the suite's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from evaluators.toy.splits import training_tasks
from evaluators.toy.task import ToyTask

from evomerge.synthetic import default_corpus
from evomerge_zoo.encoding import encode_prompt, encode_reply
from evomerge_zoo.families import FAMILIES, load_through_suite
from evomerge_zoo.pretrain import Example

GENERIC_LINES_PER_ROW = 6
GENERIC_MAX_TOKENS = 160


def suite_prompts(family: str, tokenizer, seed: int, exclude: Iterable[str], workdir: Path,
                  chunk: int = 256, curriculum: bool = False) -> Iterator[tuple[ToyTask, Mapping, list[int]]]:
    """Endless (task, suite item, prompt ids) triples of fresh training problems of `family`
    (from the family's pretraining curriculum when `curriculum` and it has one)."""
    spec = FAMILIES[family]
    stream = training_tasks(spec.pretrain_sample if curriculum and spec.pretrain_sample else spec.sample, seed, exclude)
    for n in range(10**9):
        tasks = [next(stream) for _ in range(chunk)]
        suite, items = load_through_suite(family, tasks, workdir / f"{family}-train-{seed}-{n}.jsonl")
        for task, item in zip(tasks, items):
            yield task, item, encode_prompt(tokenizer, suite.request(item).prompt)


def pretraining_examples(tokenizer, seed: int, flaw_rates: Mapping[str, float], exclude: Mapping[str, Iterable[str]],
                         workdir: Path, generic_share: float = 0.05,
                         weights: Mapping[str, float] | None = None) -> Iterator[Example]:
    """The base's mixture: families drawn by `weights` (a flawed reply at the family's flaw rate) and
    generic text (`generic_share` of the rows, trained on every token)."""
    rng = random.Random(seed)
    names = list(FAMILIES)
    streams = {name: suite_prompts(name, tokenizer, seed * 1000 + i, exclude.get(name, ()), workdir, curriculum=True)
               for i, name in enumerate(names)}
    lines = [line for line in default_corpus().splitlines() if line.strip()]
    while True:
        if rng.random() < generic_share:
            start = rng.randrange(len(lines))
            text = "\n".join(lines[start:start + GENERIC_LINES_PER_ROW])
            yield Example(tuple(tokenizer(text, add_special_tokens=False)["input_ids"][:GENERIC_MAX_TOKENS]), 0)
            continue
        name = rng.choices(names, [weights[n] for n in names])[0] if weights else rng.choice(names)
        task, _, prompt = next(streams[name])
        reply = encode_reply(tokenizer, FAMILIES[name].reply(task, rng.random() < flaw_rates[name]))
        yield Example(tuple(prompt + reply), len(prompt))
