"""The memory suite: the seeded RULER-style generator, QA file loaders, chunking, the memory agent, sub_em scoring."""

from __future__ import annotations

import json
import re

import pytest

from evaluators.backends.replay import ReplayGenerator, step_id
from evaluators.errors import DataError, SuiteConfigError
from evaluators.protocol import GenerationSettings
from evaluators.registry import build_suite
from evaluators.suites.base import SuiteConfig
from evaluators.suites.memory import MemorySuite, score_completion
from evaluators.suites.memory_agent import chunk_text, run_memory_agent
from evaluators.suites.qa_files import load_qa_file
from evaluators.suites.ruler import TASKS, generate_item, generate_items, word_lists

# -- the generator --------------------------------------------------------------------------------


def test_items_are_deterministic_and_independent_of_how_many_are_generated():
    few = generate_items(TASKS, (800,), per_task=2, seed=7)
    many = generate_items(TASKS, (800,), per_task=4, seed=7)
    assert few == [it for it in many if int(it["id"].rsplit("/", 1)[1]) < 2]
    assert generate_item("needle_qa", 800, 1, seed=7) == generate_items(["needle_qa"], [800], 2, seed=7)[1]
    assert generate_item("kv_retrieval", 800, 0, seed=7)["context"] != generate_item("kv_retrieval", 800, 0, seed=8)["context"]
    assert [it["id"] for it in few[:2]] == ["ruler-s7/kv_retrieval/800/0", "ruler-s7/kv_retrieval/800/1"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [300, 3000])
def test_the_answer_is_in_the_context_exactly_once_and_the_length_is_met(task, length):
    for index in range(20):
        item = generate_item(task, length, index)
        (answer,) = item["answers"]
        assert len(re.findall(rf"(?<![\w-]){re.escape(answer)}(?![\w-])", item["context"])) == 1
        assert length - 1 <= len(item["context"]) <= length + 80
        assert 0.0 <= item["depth"] <= 1.0


def test_each_task_really_determines_its_answer():
    kv = generate_item("kv_retrieval", 1500, 3)
    key = kv["question"].rsplit(" ", 1)[1].rstrip("?")
    assert dict(line.split(": ") for line in kv["context"].splitlines())[key] == kv["answers"][0]

    vt = generate_item("variable_tracking", 1500, 3, hops=5, chains=3)
    assignments = dict(re.findall(r"VAR (\w+) = (VAR \w+|\d+)\.", vt["context"]))
    assert len(assignments) == 3 * 6
    name = re.search(r"VAR (\w+)\?", vt["question"]).group(1)
    hops = 0
    while not assignments[name].isdigit():
        name, hops = assignments[name][4:], hops + 1
    assert (assignments[name], hops) == (vt["answers"][0], 5)

    needle = generate_item("needle_qa", 1500, 3, distractors=2)
    sentences = re.split(r"(?<=\.)[ \n]", needle["context"])
    facts = [s for s in sentences if any(w in s for w in word_lists()["names"] + word_lists()["materials"])]
    assert len(facts) == 3 and sum(needle["answers"][0] in f for f in facts) == 1


def test_filler_words_never_collide_with_the_asked_slots():
    words = word_lists()
    filler = {w.lower() for k in words if k.startswith("filler_") for w in words[k]}
    for slot in ("names", "cities", "instruments", "colors", "containers", "materials"):
        assert not filler & {w.lower() for w in words[slot]}, slot


# -- chunking and the memory agent ------------------------------------------------------------------


def test_chunks_join_back_and_respect_the_size_and_line_breaks():
    text = generate_item("needle_qa", 5000, 0)["context"]
    for size in (1, 7, 100, 999, 10_000):
        chunks = chunk_text(text, size)
        assert "".join(chunks) == text and all(0 < len(c) <= size for c in chunks)
    lines = "\n".join(f"line {i} holds some words" for i in range(50))
    assert all(c.endswith("\n") for c in chunk_text(lines, 100)[:-1])
    assert chunk_text("", 10) == []
    with pytest.raises(ValueError):
        chunk_text("abc", 0)


class ScriptedReader:
    """A generator test double that reads the agent's prompts: it copies the asked key's line into memory,
    pads the memory far past any bound, and answers with the number found in the memory."""

    name = "scripted"
    UPDATE = re.compile(r"Question: (.*?)\n\nYour memory so far:\n(.*?)\n\nNext piece of the document:\n(.*)\n\nWrite",
                        re.DOTALL)
    ANSWER = re.compile(r"Memory:\n(.*?)\n\nQuestion: ", re.DOTALL)

    def __init__(self):
        self.calls = []

    def generate(self, requests, settings):
        self.calls.append(([r.id for r in requests], [r.prompt[0]["content"] for r in requests], settings))
        outputs = []
        for request in requests:
            text = request.prompt[0]["content"]
            update = self.UPDATE.search(text)
            if update:
                question, memory, chunk = update.groups()
                key = question.rsplit(" ", 1)[1].rstrip("?")
                found = re.search(rf"^{re.escape(key)}: \d+$", chunk, re.MULTILINE)
                kept = found.group(0) if found else ("" if memory == "(empty)" else memory.split(" //")[0])
                outputs.append([f"{kept} //" + " padding" * 500])
            else:
                found = re.search(r": (\d+)", self.ANSWER.search(text).group(1))
                outputs.append([f"The value is {found.group(1)}." if found else "I do not know."])
        return outputs


def test_the_memory_agent_carries_a_bounded_memory_across_batched_steps():
    items = [generate_item("kv_retrieval", length, i) for i, length in enumerate((1200, 2500, 600))]
    reader = ScriptedReader()
    traces = run_memory_agent(reader, items, chunk_size=400, memory_chars=120,
                              memory_settings=GenerationSettings(max_new_tokens=64),
                              answer_settings=GenerationSettings(max_new_tokens=16))
    n_chunks = [len(chunk_text(it["context"], 400)) for it in items]
    # one batched call per step (items drop out as they run out of chunks), then one for the answers
    assert [len(ids) for ids, _, _ in reader.calls] == [sum(n > s for n in n_chunks) for s in range(max(n_chunks))] + [3]
    assert reader.calls[0][0] == [step_id(it["id"], "memory0") for it in items]
    assert reader.calls[-1][0] == [it["id"] for it in items]
    assert all(s.n == 1 and s.max_new_tokens == 64 for _, _, s in reader.calls[:-1])
    for trace, item, n in zip(traces, items, n_chunks):
        assert len(trace.memories) == n and all(len(m) <= 120 for m in trace.memories)
        assert score_completion(item, trace.answers[0]).passed  # the fact survived the later chunks
    # each step's prompt shows the previous step's (bounded) memory and one chunk, never the whole context
    second_prompt = reader.calls[1][1][0]
    assert f"Your memory so far:\n{traces[0].memories[0]}\n\n" in second_prompt
    assert items[0]["context"] not in second_prompt


def test_memory_agent_mode_replays_step_completions_by_id():
    item = generate_item("needle_qa", 500, 0)
    config = SuiteConfig(kind="memory", split="all", options={"mode": "memory_agent", "tasks": ["needle_qa"],
                                                              "lengths": [500], "items_per_task": 1, "chunk_size": 300})
    suite = MemorySuite(config)
    assert suite.load_items() == [item]
    n = len(chunk_text(item["context"], 300))
    samples = {step_id(item["id"], f"memory{k}"): f"note {k}" for k in range(n)}
    samples[item["id"]] = f"It is {item['answers'][0]}."
    result = suite.evaluate(ReplayGenerator(samples))
    assert result.mean == 1.0 and result.items[0].extra["memories"] == [f"note {k}" for k in range(n)]


# -- scoring and the suite -------------------------------------------------------------------------


def test_score_completion_exact_values():
    item = {"id": "q", "context": "...", "question": "?", "answers": ["4829173"]}
    result = score_completion(item, "The value is 4829173.")
    assert (result.score, result.passed, result.extra["em"], result.extra["f1"]) == (1.0, True, 0.0, 0.5)
    exact = score_completion(item, " 4829173 ")
    assert (exact.score, exact.extra["em"], exact.extra["f1"]) == (1.0, 1.0, 1.0)
    wrong = score_completion(item, "482917")
    assert (wrong.score, wrong.passed, wrong.extra["f1"]) == (0.0, False, 0.0)
    assert "expected one of ['4829173']" in wrong.reason
    two = score_completion({**item, "answers": ["New York City", "NYC"]}, "It was the city of new york city!")
    assert two.score == 1.0 and two.extra["f1"] == pytest.approx(2 * (3 / 7) / (3 / 7 + 1))  # 7 tokens once "the" is dropped


def test_direct_mode_evaluates_generated_items_with_replayed_answers():
    suite = build_suite({"kind": "memory", "split": "all",
                         "options": {"lengths": [400], "items_per_task": 2, "data_seed": 3}})
    items = suite.load_items()
    assert len(items) == 6
    answers = {it["id"]: (it["answers"][0] if it["task"] != "needle_qa" else "no idea") for it in items}
    result = suite.evaluate(ReplayGenerator(answers))
    assert result.n == 6 and result.mean == pytest.approx(4 / 6)
    assert result.metrics == {"em": pytest.approx(4 / 6), "f1": pytest.approx(4 / 6), "sub_em/kv_retrieval": 1.0,
                              "sub_em/needle_qa": 0.0, "sub_em/variable_tracking": 1.0}
    first = suite.request(items[0]).prompt[0]["content"]
    assert items[0]["context"] in first and first.index(items[0]["context"]) < first.index(items[0]["question"])
    assert result.items[0].prompt == items[0]["question"]


def test_bad_options_fail_clearly():
    with pytest.raises(SuiteConfigError, match="invalid options for the memory suite: mode"):
        MemorySuite(SuiteConfig(kind="memory", options={"mode": "telepathy"}))
    with pytest.raises(SuiteConfigError, match="invalid options for the memory suite: tasks"):
        MemorySuite(SuiteConfig(kind="memory", options={"tasks": ["sudoku"]}))
    with pytest.raises(SuiteConfigError, match="invalid options for the memory suite: chunk_len"):
        MemorySuite(SuiteConfig(kind="memory", options={"chunk_len": 5}))
    with pytest.raises(SuiteConfigError, match="lengths"):
        MemorySuite(SuiteConfig(kind="memory", options={"lengths": [0]}))


# -- QA files --------------------------------------------------------------------------------------


def test_squad_official_json_skips_unanswerable_questions(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "a2", "question": "Where is Atlantis?", "answers": [], "is_impossible": True}]}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(squad))
    assert load_qa_file(path) == [{"id": "a1", "task": "squad", "context": "Paris is in France.",
                                   "question": "Where is Paris?", "answers": ["France"]}]


def test_hotpotqa_and_jsonl_records_load(tmp_path):
    hotpot = [{"_id": "h1", "question": "Which magazine came first?", "answer": "Arthur's Magazine", "type": "comparison",
               "context": [["Arthur's Magazine", ["Arthur's Magazine was a monthly.", " It began in 1844."]],
                           ["First for Women", ["A magazine from 1989."]]]}]
    (tmp_path / "hotpot.json").write_text(json.dumps(hotpot))
    (item,) = load_qa_file(tmp_path / "hotpot.json")
    assert item["context"] == ("Arthur's Magazine: Arthur's Magazine was a monthly. It began in 1844.\n\n"
                               "First for Women: A magazine from 1989.")
    assert (item["id"], item["task"], item["answers"]) == ("h1", "comparison", ["Arthur's Magazine"])
    hf = {"id": "h2", "question": "q?", "answer": "a", "split": "search",
          "context": {"title": ["A", "B"], "sentences": [["x.", " y."], ["z."]]}}
    plain = {"question": "Who?", "context": ["one paragraph", "another"], "answers": {"text": ["Ann", "Anne"]},
             "split": "test"}
    (tmp_path / "mixed.jsonl").write_text(json.dumps(hf) + "\n\n" + json.dumps(plain) + "\n")
    first, second = load_qa_file(tmp_path / "mixed.jsonl")
    assert first["context"] == "A: x. y.\n\nB: z."
    assert second == {"id": "mixed/3", "task": "qa", "context": "one paragraph\n\nanother", "question": "Who?",
                      "answers": ["Ann", "Anne"], "split": "test"}
    suite = MemorySuite(SuiteConfig(kind="memory", data=str(tmp_path / "mixed.jsonl"), split="test"))
    assert [it["id"] for it in suite.items()] == ["mixed/3"]


@pytest.mark.parametrize("record, message", [
    ({"id": "x", "question": "q", "context": "c"}, "mixed.jsonl:1: no gold answer"),
    ({"id": "x", "context": "c", "answer": "a"}, "'question' must be a non-empty string"),
    ({"id": "x", "question": "q", "answer": "a"}, "has no 'context'"),
    ({"id": "x", "question": "q", "answer": "a", "context": [1]}, "a context paragraph must be"),
])
def test_bad_qa_records_name_the_line(tmp_path, record, message):
    (tmp_path / "mixed.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_qa_file(tmp_path / "mixed.jsonl")


def test_the_toy_name_reads_the_zoo_file_or_says_how_to_build_it():
    suite = MemorySuite(SuiteConfig(kind="memory", data="toy", split="all"))
    try:
        items = suite.load_items()
    except DataError as exc:
        assert "evomerge zoo build" in str(exc) and "data/toy/memory.jsonl" in str(exc)
    else:
        assert items and all(it["answers"] and it["context"] for it in items)


def test_ruler_exact_scoring_is_an_option_and_named_in_the_result():
    items = [{"id": "q1", "task": "kv_retrieval", "context": "k: 4821937", "question": "k?", "answers": ["4821937"]}]
    replay = ReplayGenerator({"q1": "4,821,937"})
    default = MemorySuite(SuiteConfig(kind="memory", split="all"))
    default._items = items
    exact = MemorySuite(SuiteConfig(kind="memory", split="all", options={"scoring": "ruler_exact"}))
    exact._items = items
    loose, strict = default.evaluate(replay), exact.evaluate(replay)
    assert (loose.mean, loose.scoring, loose.metrics["sub_em/kv_retrieval"]) == (1.0, "sub_em", 1.0)
    assert (strict.mean, strict.scoring, strict.metrics["ruler_exact/kv_retrieval"]) == (0.0, "ruler_exact", 0.0)
    assert strict.items[0].extra["scoring"] == "ruler_exact" and strict.to_dict()["scoring"] == "ruler_exact"
    with pytest.raises(SuiteConfigError):
        MemorySuite(SuiteConfig(kind="memory", options={"scoring": "squad"}))
