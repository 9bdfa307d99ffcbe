"""The toy task families: seeded, well-formed for their suites, correct replies pass and flawed ones fail."""

from __future__ import annotations

import random

import pytest

from evaluators.toy import coding, memory, tool_use
from evaluators.toy.splits import evaluation_splits, training_tasks

FAMILIES = {"coding": coding, "tool_use": tool_use, "memory": memory}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_tasks(family):
    sample = FAMILIES[family].sample
    first = [sample(random.Random(7), i) for i in range(5)]
    again = [sample(random.Random(7), i) for i in range(5)]
    other = [sample(random.Random(8), i) for i in range(5)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_splits_are_disjoint_problems_and_training_avoids_them(family):
    sample = FAMILIES[family].sample
    splits = evaluation_splits(sample, seed=3, search=20, test=30)
    search_keys = {t.key for t in splits["search"]}
    test_keys = {t.key for t in splits["test"]}
    assert len(search_keys) == 20 and len(test_keys) == 30 and not search_keys & test_keys
    assert {t.item["split"] for t in splits["search"]} == {"search"}
    assert {t.item["split"] for t in splits["test"]} == {"test"}
    ids = [t.item.get("id", t.item.get("task_id")) for t in splits["search"] + splits["test"]]
    assert len(set(ids)) == len(ids)
    stream = training_tasks(sample, seed=3, exclude=search_keys | test_keys)
    drawn = [next(stream) for _ in range(200)]
    assert not {t.key for t in drawn} & (search_keys | test_keys)


def test_tool_use_answers_match_and_flawed_calls_do_not():
    from evaluators.suites.tool_use import score_completion

    rng = random.Random(0)
    for i in range(200):
        task = tool_use.sample(rng, i)
        right = score_completion(task.item, task.answer)
        wrong = score_completion(task.item, task.flawed_answer)
        assert right.passed, (task.answer, right.reason)
        assert not wrong.passed
        assert len(task.item["function"]) == tool_use.SHOWN
        # the flawed call uses another offered function: a position slip, not garbage
        names = [f["name"] for f in task.item["function"]]
        assert task.flawed_answer.split("(")[0].strip("[") in names


def test_memory_answer_is_in_context_once_and_flawed_is_the_last_fact():
    from evaluators.suites.memory import score_completion

    rng = random.Random(0)
    for i in range(200):
        task = memory.sample(rng, i)
        context = task.item["context"]
        assert context.count(f" is {task.answer}.") == 1
        assert context.count(f" is {task.flawed_answer}.") == 1
        # the slip answers the value of the last fact in the context
        assert context.rindex(" is ") == context.rindex(f" is {task.flawed_answer}.")
        assert score_completion(task.item, task.answer).passed
        assert not score_completion(task.item, task.flawed_answer).passed


def test_memory_values_cannot_match_each_other_by_substring():
    values = [v.lower() for v in memory.VALUES]
    assert len(set(values)) == len(values)
    assert not [(a, b) for a in values for b in values if a != b and a in b]


def test_coding_tests_separate_the_correct_body_from_the_flawed_one():
    """Executed here in-process: the bodies are our own templates, not model output."""
    rng = random.Random(0)
    for i in range(300):
        task = coding.sample(rng, i)
        item = task.item
        for body, should_pass in ((task.answer, True), (task.flawed_answer, False)):
            namespace: dict = {}
            exec(item["prompt"] + body + "\n" + item["test"], namespace)  # noqa: S102 - trusted template code
            try:
                namespace["check"](namespace[item["entry_point"]])
                passed = True
            except AssertionError:
                passed = False
            assert passed is should_pass, (item["prompt"], body, item["test"])
