"""Toy memory family: recall the value of one key among several facts scattered through filler text.

An item is a QA record (`context`, `question`, `answers`), scored by substring exact match. The
context holds 3-5 facts "The secret word of Anna is tiger." between filler sentences; the question
asks for one key that is never the last fact. The flawed completion is a weak reader's recency
bias: the value of the last fact in the context.
"""

from __future__ import annotations

import random

from evaluators.toy.task import ToyTask

KEYS = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Kate", "Leo",
        "Maya", "Nina", "Omar", "Paul", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Yara", "Zoe", "Oscar")
# No value is a substring of another, so substring matching cannot credit a wrong value.
VALUES = ("tiger", "apple", "river", "candle", "garden", "silver", "dragon", "planet", "forest", "window",
          "violin", "rocket", "pepper", "island", "mirror", "castle", "pencil", "orange", "turtle", "lemon",
          "bridge", "ladder", "hammer", "falcon", "cherry", "rabbit", "tomato", "kettle", "anchor", "wallet")
FILLER = (
    "The weather was mild and the wind came from the west.",
    "A train left the station a little after noon.",
    "The market was busy with people buying bread and fruit.",
    "Someone left a blue umbrella by the door.",
    "The library closes early on Sundays.",
    "Two children played chess in the park.",
    "The coffee in the kitchen had gone cold.",
    "A small boat drifted slowly along the canal.",
    "The meeting was moved to the next morning.",
    "Birds were singing in the old oak tree.",
    "The printer on the second floor ran out of paper.",
    "It rained for an hour and then the sun came out.",
)
LEXICON = KEYS + VALUES  # words the zoo's tokenizer should keep whole
FACTS = (3, 5)  # inclusive range of facts per context
FILLERS = (2, 4)  # inclusive range of filler sentences


def sample(rng: random.Random, index: int, facts: tuple[int, int] = FACTS,
           fillers: tuple[int, int] = FILLERS) -> ToyTask:
    """One memory task; `index` only names it (toy-memory-<index>). Fewer facts / fillers make it easier."""
    n_facts = rng.randint(*facts)
    keys = rng.sample(KEYS, n_facts)
    values = rng.sample(VALUES, n_facts)
    fact_lines = [f"The secret word of {k} is {v}." for k, v in zip(keys, values)]
    sentences = fact_lines + rng.sample(FILLER, rng.randint(*fillers))
    # Shuffle fillers among the facts while keeping the facts' own order (the last fact stays last).
    slots = sorted(rng.sample(range(len(sentences)), n_facts))
    filler_iter = iter(sentences[n_facts:])
    fact_iter = iter(fact_lines)
    context = " ".join(next(fact_iter) if i in slots else next(filler_iter) for i in range(len(sentences)))
    target = rng.randrange(n_facts - 1)  # never the last fact: the recency slip must be wrong
    item = {
        "id": f"toy-memory-{index}",
        "task": "toy_recall",
        "context": context,
        "question": f"What is the secret word of {keys[target]}?",
        "answers": [values[target]],
    }
    return ToyTask(item=item, answer=values[target], flawed_answer=values[-1],
                   key=f"memory|{context}|{keys[target]}")
