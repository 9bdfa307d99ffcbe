"""The README's main job: experiments/demo.yaml on the committed zoo.

The full demo (60 candidates) takes minutes; here the same experiment file runs with a budget of
three candidates and four items per suite, end to end through the CLI to report.html and the
held-out table, on the real zoo checkpoints and the real toy suites.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evomerge.cli import main
from evomerge.search.experiment import Experiment

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "experiments" / "demo.yaml"
AGENTS = ("coding", "tool_use", "memory")


def test_demo_experiment_is_the_one_the_readme_promises():
    exp = Experiment.from_yaml(DEMO)
    assert exp.optimizer.name == "nsga2"
    assert exp.search_space == "method_per_layer"
    assert Path(exp.base).resolve() == REPO / "zoo" / "base"
    assert {a: Path(p).resolve() for a, p in exp.models.items()} == {a: REPO / "zoo" / a for a in AGENTS}
    assert set(exp.objectives) == set(AGENTS)
    assert all(o.suite.data == "toy" and o.suite.split in (None, "search") for o in exp.objectives.values())
    assert exp.heldout.enabled and exp.heldout.split == "test"
    for name in ("base", *AGENTS):  # the committed zoo is complete and loadable as safetensors
        assert (REPO / "zoo" / name / "model.safetensors").is_file()
        assert (REPO / "zoo" / name / "tokenizer.json").is_file()


@pytest.mark.slow
def test_reduced_demo_runs_to_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load(DEMO.read_text())
    data.update(base=str(REPO / "zoo" / "base"), models={a: str(REPO / "zoo" / a) for a in AGENTS},
                budget=3, fidelity={"rungs": [4]}, heldout={"split": "test", "limit": 4},
                optimizer={"name": "nsga2", "population": 3}, workers={"kind": "inline", "count": 1})
    experiment = tmp_path / "demo.yaml"
    experiment.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["search", str(experiment), "--out", str(out), "--no-progress"]) == 0
    for name in ("report.html", "front.json", "trials.csv", "hypervolume.csv", "front.png", "heldout.json"):
        assert (out / name).is_file(), name
    front = json.loads((out / "front.json").read_text())
    assert front["members"]
    for member in front["members"]:  # search-split and held-out scores side by side, and the recipe
        assert set(member["search"]) == set(member["heldout"]) == set(AGENTS)
        assert member["recipe"]["method"] and len(member["recipe"]["models"]) == 3
