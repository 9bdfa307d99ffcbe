"""`evomerge evaluate`: replayed and generated runs write results; user errors exit 1 with a message."""

from __future__ import annotations

import json

import pytest

from evomerge.cli import main
from evaluators.suites.coding_data import load_items, resolve_data


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    """A two-problem HumanEval file, and saved completions: one right, one wrong."""
    folder = tmp_path_factory.mktemp("cli_eval")
    items = {it["id"]: it for it in load_items(resolve_data("humaneval"))}
    data = folder / "two.jsonl"
    data.write_text("".join(json.dumps({**items[i], "task_id": i}) + "\n" for i in ("HumanEval/0", "HumanEval/4")))
    samples = folder / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": items["HumanEval/0"]["canonical_solution"]})
                       + "\n" + json.dumps({"task_id": "HumanEval/4", "completion": "    return 0.0\n"}) + "\n")
    return data, samples


def test_replayed_completions_are_scored_and_written(tiny_family, problems, tmp_path, capsys):
    data, samples = problems
    out_json, out_jsonl = tmp_path / "result.json", tmp_path / "items.jsonl"
    code = main(["evaluate", str(tiny_family["base"]), "--suite", "coding", "--data", str(data),
                 "--completions", str(samples), "--json", str(out_json), "--jsonl", str(out_jsonl)])
    assert code == 0
    table = capsys.readouterr().out
    assert "coding" in table and "0.500 ± 0.500" in table and "pass@1=0.500" in table
    result = json.loads(out_json.read_text())
    assert result["backend"] == "replay" and result["split"] == "all"
    coding = result["suites"]["coding"]
    assert (coding["n"], coding["mean"]) == (2, 0.5)
    reasons = {it["id"]: it["reason"] for it in coding["items"]}
    assert reasons == {"HumanEval/0": "passed", "HumanEval/4": "failed: AssertionError"}
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [(line["suite"], line["id"]) for line in lines] == [("coding", "HumanEval/0"), ("coding", "HumanEval/4")]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_generates_with_the_hf_backend(tiny_family, tmp_path, capsys):
    out_json = tmp_path / "gen.json"
    code = main(["evaluate", str(tiny_family["base"]), "--suite", "coding", "--limit", "2", "--seed", "1",
                 "--max-new-tokens", "8", "--plain", "--json", str(out_json)])
    assert code == 0
    coding = json.loads(out_json.read_text())["suites"]["coding"]
    assert coding["n"] == 2 and coding["mean"] == 0.0  # a random tiny model solves nothing, for a real reason
    assert all(item["reason"] and item["completion"] is not None for item in coding["items"])


@pytest.mark.parametrize("extra,message", [
    (["--suite", "no_such_suite"], "unknown suite 'no_such_suite'"),
    (["--suite", "coding,coding"], "names a suite twice"),
    (["--suite", "coding,other", "--data", "DATA"], "--data replaces one suite's data"),
    (["--data", "DATA", "--completions", "MISSING"], "completions file MISSING does not exist"),
    (["--data", "DATA", "--completions", "PARTIAL"], "no completion for 1 request(s): 'HumanEval/4'"),
    (["--limit", "0"], "--limit must be >= 1"),
])
def test_user_errors_exit_1_with_a_message(tiny_family, problems, tmp_path, capsys, extra, message):
    data, samples = problems
    partial = tmp_path / "partial.jsonl"
    partial.write_text(samples.read_text().splitlines()[0] + "\n")
    paths = {"DATA": str(data), "MISSING": str(tmp_path / "nope.jsonl"), "PARTIAL": str(partial)}
    argv = ["evaluate", str(tiny_family["base"])] + [paths.get(a, a) for a in extra]
    out_json = tmp_path / "never.json"
    assert main(argv + ["--json", str(out_json)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.replace("MISSING", paths["MISSING"]) in err
    assert not out_json.exists()


def test_missing_model_dir_exits_1(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--suite", "coding"]) == 1
    assert "model directory" in capsys.readouterr().err
