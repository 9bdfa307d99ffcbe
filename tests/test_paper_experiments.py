"""The paper experiments (experiments/paper/*.yaml): each validates on both model sets, and a reduced run of
each on the toy model set (the tiny family in place of the zoo, the real toy suites, a thinned grid and two
items per objective) writes its table with every row the paper's table has."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evomerge.cli import main
from evomerge.sweep.experiment import load_sweep_experiment

PAPER = Path(__file__).resolve().parent.parent / "experiments" / "paper"
EXPERIMENTS = ("table1_three_agents", "table2_r_sweep", "pairs")
AGENTS = ("coding", "tool_use", "memory")
PAPER_PATHS = {"base": "/models/Qwen2.5-7B-Instruct", "coding": "/models/ReasonFlux-Coder-7B",
               "tool_use": "/models/Qwen2.5-7B-Instruct-ToolRL-grpo-cold", "memory": "/models/RL-MemoryAgent-7B"}
TABLE1_METHODS = ["TA", "TIES", "DARE+TA", "DARE+TIES", "RAM", "RAM+"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_paper_experiment_validates_on_both_model_sets(name, monkeypatch):
    from evaluators.registry import build_suite

    toy = load_sweep_experiment(PAPER / f"{name}.yaml")
    assert toy.model_set == "toy" and toy.generator.backend == "hf"
    repo = PAPER.parent.parent
    assert toy.base == str(repo / "zoo" / "base")
    assert toy.models == {a: str(repo / "zoo" / a) for a in AGENTS}
    assert all(o.suite.data == "toy" for o in toy.objectives.values())

    paper = load_sweep_experiment(PAPER / f"{name}.yaml", model_set="paper", paths=PAPER_PATHS)
    assert (paper.base, paper.models) == (PAPER_PATHS["base"], {a: PAPER_PATHS[a] for a in AGENTS})
    assert paper.generator.backend == "vllm" and paper.generator.dtype == "bfloat16"
    assert paper.sweep == toy.sweep  # the switch changes the models and suites, never the grid
    for objective, obj in paper.objectives.items():  # every suite accepts its options
        build_suite(obj.suite, name=objective)
    for key, path in PAPER_PATHS.items():
        monkeypatch.setenv(f"EVOMERGE_PAPER_{key.upper()}", path)
    from_env = load_sweep_experiment(PAPER / f"{name}.yaml", model_set="paper")
    assert (from_env.base, from_env.models) == (paper.base, paper.models)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_paper_model_set_scores_with_the_references_rules(name):
    """BFCL columns with bfcl-eval's prompt and verdicts, memory columns with RULER's substring match; the toy set keeps
    the lenient / sub_em defaults its tiny agents were trained and measured with."""
    from evaluators.registry import build_suite

    paper = load_sweep_experiment(PAPER / f"{name}.yaml", model_set="paper", paths=PAPER_PATHS)
    scorings = {o: build_suite(obj.suite, name=o).scoring for o, obj in paper.objectives.items()}
    kinds = {o: obj.suite.kind for o, obj in paper.objectives.items()}
    assert {scorings[o] for o in scorings if kinds[o] == "tool_use"} == {"bfcl (prompt: bfcl)"}
    assert {scorings[o] for o in scorings if kinds[o] == "memory"} == {"ruler_exact"}
    toy = load_sweep_experiment(PAPER / f"{name}.yaml")
    toy_scorings = {obj.suite.kind: build_suite(obj.suite, name=o).scoring for o, obj in toy.objectives.items()}
    assert toy_scorings["tool_use"] == "lenient (prompt: suite)" and toy_scorings["memory"] == "sub_em"


def test_the_grids_are_the_papers():
    t1 = load_sweep_experiment(PAPER / "table1_three_agents.yaml").sweep.methods
    assert list(t1) == TABLE1_METHODS
    scales = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    assert (t1["TA"].method, t1["TA"].grid) == ("task_arithmetic", {"lambda": scales})
    assert (t1["TIES"].method, t1["TIES"].grid) == ("ties", {"lambda": scales, "density": [0.1, 0.2, 0.3]})
    drop = [round(1 - p / 10, 1) for p in range(1, 10)]  # drop p = 0.1 ... 0.9
    assert (t1["DARE+TA"].method, t1["DARE+TA"].grid) == ("dare_linear", {"density": drop})
    assert (t1["DARE+TIES"].method, t1["DARE+TIES"].grid) == ("dare_ties", {"density": drop})
    assert (t1["RAM"].method, t1["RAM"].parameters) == ("ram", {"epsilon": 1e-5})
    assert (t1["RAM+"].method, t1["RAM+"].parameters) == ("ram_plus", {"epsilon": 1e-5, "r": 0.1, "alpha": 2.0})
    t2 = load_sweep_experiment(PAPER / "table2_r_sweep.yaml").sweep.methods["RAM+"]
    assert (t2.grid, t2.parameters["alpha"], t2.report) == ({"r": [0.0, 0.05, 0.1, 0.15, 0.2]}, 2.0, "every")
    pairs = load_sweep_experiment(PAPER / "pairs.yaml").sweep
    assert pairs.methods == load_sweep_experiment(PAPER / "table1_three_agents.yaml").sweep.methods
    assert [b.models for b in pairs.blocks.values()] == [["coding", "tool_use"], ["tool_use", "memory"],
                                                         ["coding", "memory"]]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One evaluation cache for the three runs: the references are scored once, as on a user's machine."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EVOMERGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def reduced_run(name, family, out, *extra):
    paths = ",".join(f"{k}={family[k]}" for k in ("base",) + AGENTS)
    argv = ["sweep", str(PAPER / f"{name}.yaml"), "--out", str(out), "--paths", paths, "--limit", "2",
            "--worker-kind", "inline", "--no-progress", *extra]
    assert main(argv) == 0
    with open(out / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert (out / "table.md").is_file() and (out / "grid.csv").is_file()
    assert "Scoring: tool_use `lenient (prompt: suite)`, memory `sub_em`." in (out / "table.md").read_text()
    assert all(r["failure"] == "" for r in rows), [r["failure"] for r in rows]
    return rows


@pytest.mark.slow
def test_table1_reduced_run_has_every_row(tiny_family, tmp_path, shared_cache, capsys):
    rows = reduced_run("table1_three_agents", tiny_family, tmp_path / "t1", "--grid-max", "1")
    assert [r["model"] for r in rows] == ["base", *AGENTS, *TABLE1_METHODS]
    assert all(r[f"{o}_n"] == "2" for r in rows for o in AGENTS)
    out = capsys.readouterr().out
    assert "| RAM+ |" in out and "table:" in out


@pytest.mark.slow
def test_table2_reduced_run_has_a_row_per_r(tiny_family, tmp_path, shared_cache):
    rows = reduced_run("table2_r_sweep", tiny_family, tmp_path / "t2", "--grid-max", "2")
    assert [r["model"] for r in rows] == ["base", *AGENTS, "RAM+ (r=0)", "RAM+ (r=0.2)"]


@pytest.mark.slow
def test_pairs_reduced_run_has_a_block_per_pair(tiny_family, tmp_path, shared_cache):
    rows = reduced_run("pairs", tiny_family, tmp_path / "pairs", "--grid-max", "1")
    blocks = {"code_tool": ("coding", "tool_use"), "tool_memory": ("tool_use", "memory"),
              "code_memory": ("coding", "memory")}
    assert [(r["block"], r["model"]) for r in rows] == [
        (b, m) for b, pair in blocks.items() for m in ("base", *pair, *TABLE1_METHODS)]
    for r in rows:  # each block shows the columns of its own two agents
        assert {o for o in AGENTS if r[o] != ""} == set(blocks[r["block"]])
