"""`evomerge sweep`: grid expansion, the choice on the search split, the held-out table, resume and the cache.

The end-to-end tests score merges of the tiny family with `ScaleProbe`, a deterministic weight-space
suite: for task arithmetic it measures exactly the merge's lambda, and it rewards a different lambda
on each split, so a test can tell which split chose the grid point and which one the table reports.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml

from evaluators.protocol import ItemResult, SuiteResult
from evomerge.cli import main
from evomerge.errors import ExperimentError
from evomerge.sweep import choose_best, expand_grid, run_sweep, thin
from evomerge.sweep.experiment import (
    SweepMethod,
    load_sweep_experiment,
    parse_paths,
    sweep_experiment_from_dict,
)
from evomerge.report.tables import Score, TableBlock, TableRow, average, to_csv, to_markdown

AGENTS = ("coding", "tool_use", "memory")
CALLS: list[tuple[str, str]] = []  # (suite, split) of every ScaleProbe evaluation, in this process
INTERRUPT_AFTER: list[int] = []  # a number here: the user stops the run once that many evaluations were made
OFFSETS = (0.0, 0.02, 0.04, 0.06)  # per-item score offsets: a known mean and standard error


class ScaleProbe:
    """options: base, agents (checkpoint dirs), search_target, test_target.

    s = <merged - base, sum of task vectors> / |sum of task vectors|^2 (lambda for task arithmetic);
    item i scores 1 - |s - target of the split| - OFFSETS[i]."""

    def __init__(self, name, config):
        from safetensors.torch import load_file

        self.name, self.config = name, config
        opts = config.options
        base = load_file(f"{opts['base']}/model.safetensors")
        agents = [load_file(f"{a}/model.safetensors") for a in opts["agents"]]
        self.base = {k: v.float() for k, v in base.items() if v.is_floating_point()}
        self.tau = {k: sum(a[k].float() - self.base[k] for a in agents) for k in self.base}
        self.norm2 = sum(float((t * t).sum()) for t in self.tau.values())
        self.targets = {"search": opts["search_target"], "test": opts["test_target"]}

    def evaluate(self, generator, split=None, limit=None, seed=0) -> SuiteResult:
        split = split or self.config.split
        if INTERRUPT_AFTER and len(CALLS) >= INTERRUPT_AFTER[0]:
            raise KeyboardInterrupt  # Ctrl-C mid-sweep
        CALLS.append((self.name, split))
        state = generator.model.state_dict()
        s = sum(float(((state[k].float() - self.base[k]) * t).sum()) for k, t in self.tau.items()) / self.norm2
        target = self.targets[split]
        return SuiteResult.from_items(self.name, [ItemResult(f"{split}-{i}", 1 - abs(s - target) - off, True)
                                                  for i, off in enumerate(OFFSETS)])


def probe_factory(name, config):
    return ScaleProbe(name, config)


def expected(s: float, target: float) -> tuple[float, float]:
    """The probe's mean and standard error at scale s."""
    scores = [1 - abs(s - target) - off for off in OFFSETS]
    mean = sum(scores) / len(scores)
    se = math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1) / len(scores))
    return mean, se


def sweep_dict(family, tmp_path, methods=None, **extra):
    probe = {"kind": "probe", "options": {"base": str(family["base"]), "agents": [str(family[a]) for a in AGENTS],
                                          "search_target": 0.5, "test_target": 0.9}}
    data = {
        "name": "probe",
        "base": str(family["base"]),
        "models": {a: str(family[a]) for a in AGENTS},
        "objectives": {"a": probe, "b": probe},
        "sweep": {"methods": methods or {
            "TA": {"method": "task_arithmetic", "grid": {"lambda": [0.1, 0.5, 0.9]}},
            "TA each": {"method": "task_arithmetic", "grid": {"lambda": [0.5, 0.9]}, "report": "every"},
            "RAM": {"method": "ram", "parameters": {"epsilon": 1e-5}},
        }},
        "workers": {"kind": "inline", "threads": 1},
        "cache": {"enabled": False, "dir": str(tmp_path / "cache")},
    }
    data.update(extra)
    return data


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- the grid ---------------------------------------------------------------------------------------


def test_expand_grid_is_the_cartesian_product_in_yaml_order():
    ties = SweepMethod(method="ties", grid={"lambda": [0.1, 0.3, 0.5, 0.7, 0.9, 1.0], "density": [0.1, 0.2, 0.3]})
    points = expand_grid(ties)
    assert len(points) == 18
    assert points[:4] == [{"lambda": 0.1, "density": 0.1}, {"lambda": 0.1, "density": 0.2},
                          {"lambda": 0.1, "density": 0.3}, {"lambda": 0.3, "density": 0.1}]
    assert expand_grid(ties, grid_max=2) == [{"lambda": 0.1, "density": 0.1}, {"lambda": 0.1, "density": 0.3},
                                             {"lambda": 1.0, "density": 0.1}, {"lambda": 1.0, "density": 0.3}]
    assert expand_grid(SweepMethod(method="ram", parameters={"epsilon": 1e-5})) == [{}]


def test_thin_keeps_both_ends_evenly_spaced():
    nine = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert thin(nine, 3) == [0.9, 0.5, 0.1]
    assert thin(nine, 1) == [0.9]
    assert thin(nine, None) == nine and thin(nine, 20) == nine


def test_choose_best_takes_the_highest_search_average_and_the_first_on_a_tie():
    class P:
        def __init__(self, key):
            self.key = key

    a, b, c, d = P("a"), P("b"), P("c"), P("d")
    assert choose_best([a, b, c, d], {"a": 0.2, "b": 0.7, "c": 0.7, "d": None}) is b
    assert choose_best([a, b], {"a": math.nan, "b": 0.1}) is b
    assert choose_best([a, b], {}) is None


# -- the YAML -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("change,message", [
    (lambda d: d["sweep"]["methods"]["TA"].update(grid={"scale": [0.5]}), "has no parameter(s) ['scale']"),
    (lambda d: d["sweep"]["methods"]["TA"].update(parameters={"lambda": 1.0}), "both as fixed parameters and in"),
    (lambda d: d["sweep"]["methods"]["TA"].update(grid={"lambda": []}), "grid values of ['lambda'] are empty"),
    (lambda d: d["sweep"]["methods"]["TA"].update(method="fisher"), "unknown merge method 'fisher'"),
    (lambda d: d["sweep"].update(blocks={"x": {"models": ["coding", "vision"]}}), "unknown models ['vision']"),
    (lambda d: d["objectives"]["a"].update(split="test"), "also the held-out split"),
    (lambda d: d.update(labels={"vision": "V"}), "labels name unknown models"),
])
def test_invalid_sweeps_are_refused_naming_the_key(tiny_family, tmp_path, change, message):
    data = sweep_dict(tiny_family, tmp_path)
    change(data)
    with pytest.raises(ExperimentError) as err:
        sweep_experiment_from_dict(data)
    assert message in str(err.value)


def test_one_switch_chooses_the_model_set_and_paths_can_replace_it(tmp_path, monkeypatch):
    (tmp_path / "sets.yaml").write_text(yaml.safe_dump({
        "small": {"base": "zoo/base", "models": {"coding": "zoo/coding"}, "objectives": {"coding": {"data": "toy"}}},
        "large": {"base": "${BIG_BASE}", "models": {"coding": "${BIG_CODER}"},
                  "objectives": {"humaneval": {"kind": "coding"}}, "generator": {"backend": "vllm"}},
    }))
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({"model_set": "small", "model_sets": "sets.yaml",
                                        "sweep": {"methods": {"RAM": {"method": "ram"}}}}))
    small = load_sweep_experiment(exp_file)
    # no zoo/ next to the file: `zoo/base` reads as a Hub id (evomerge.io.hub), kept in its explicit form
    assert small.model_set == "small" and small.base == "hf://zoo/base"
    assert small.objectives["coding"].suite.kind == "coding" and small.generator.backend == "hf"

    with pytest.raises(ExperimentError, match=r"\$\{BIG_BASE\}, which is not set; export BIG_BASE="):
        load_sweep_experiment(exp_file, model_set="large")
    monkeypatch.setenv("BIG_BASE", "/models/qwen")
    monkeypatch.setenv("BIG_CODER", "/models/coder")
    large = load_sweep_experiment(exp_file, model_set="large")
    assert (large.base, large.models["coding"], large.generator.backend) == ("/models/qwen", "/models/coder", "vllm")
    monkeypatch.delenv("BIG_BASE")
    given = load_sweep_experiment(exp_file, model_set="large", paths=parse_paths("base=/m/q, coding=/m/c"))
    assert (given.base, given.models["coding"]) == ("/m/q", "/m/c")

    with pytest.raises(ExperimentError, match="no model set 'huge'.*model sets: large, small"):
        load_sweep_experiment(exp_file, model_set="huge")
    with pytest.raises(ExperimentError, match="neither 'base' nor a model"):
        load_sweep_experiment(exp_file, paths={"memory": "/m/x"})
    with pytest.raises(ExperimentError, match="name=path pairs"):
        parse_paths("base")


# -- the table ----------------------------------------------------------------------------------------


def test_table_layout_is_exact():
    s = {"coding": Score(0.25, 0.05, 8), "memory": Score(0.5, 0.1, 8)}
    rows = [
        TableRow("base", "base", s),
        TableRow("coding", "specialist", {"coding": Score(0.75, 0.05, 8), "memory": Score(0.125, 0.0, 8)}),
        TableRow("TA", "method", {"coding": Score(0.5, 0.1, 8), "memory": Score(0.5, 0.1, 8)},
                 method="task_arithmetic", point="lambda=0.5", parameters={"lambda": 0.5}, search_average=0.625),
        TableRow("RAM", "method", {}, method="ram", failure="out of memory | twice"),
    ]
    block = TableBlock("all", "Code + Memory", ["coding", "memory"], rows)
    assert to_markdown("T", ["A note."], [block], ["Grids:"]) == "\n".join([
        "# T", "", "A note.", "",
        "| Model | coding | memory | Avg | Grid point (search avg) |",
        "|---|---:|---:|---:|---|",
        "| base | 25.00 ± 5.00 | **50.00 ± 10.00** | 37.50 ± 5.59 |  |",
        "| coding | **75.00 ± 5.00** | 12.50 ± 0.00 | 43.75 ± 2.50 |  |",
        "| TA | 50.00 ± 10.00 | **50.00 ± 10.00** | **50.00 ± 7.07** | lambda=0.5 (62.50) |",
        "| RAM | — | — | — | failed: out of memory \\| twice |",
        "", "Grids:", ""])
    assert to_csv([block]).splitlines() == [
        "block,model,kind,method,grid_point,parameters,search_average,coding,coding_stderr,coding_n,"
        "memory,memory_stderr,memory_n,avg,avg_stderr,failure",
        f"all,base,base,,,,,0.25,0.05,8,0.5,0.1,8,0.375,{math.sqrt(0.05**2 + 0.1**2) / 2!r},",
        "all,coding,specialist,,,,,0.75,0.05,8,0.125,0.0,8,0.4375,0.025,",
        f'all,TA,method,task_arithmetic,lambda=0.5,"{{""lambda"":0.5}}",0.625,0.5,0.1,8,0.5,0.1,8,0.5,'
        f'{math.sqrt(0.1**2 + 0.1**2) / 2!r},',
        "all,RAM,method,ram,,,,,,,,,,,,out of memory | twice",
    ]
    assert average(s, ["coding"]) == Score(0.25, 0.05, 8) and average(s, ["coding", "tool_use"]) is None


# -- end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tiny_family, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    exp = sweep_experiment_from_dict(sweep_dict(tiny_family, tmp))
    CALLS.clear()
    summary = run_sweep(exp, tmp / "run", suite_factory=probe_factory, progress=False)
    return exp, tmp, summary, len(CALLS)


def test_grid_points_are_chosen_on_the_search_split_and_reported_on_the_held_out_split(swept):
    exp, tmp, summary, _ = swept
    run = tmp / "run"
    assert summary.points == 3 + 2 + 1 and summary.failed == 0
    rows = {r["model"]: r for r in read_csv(run / "table.csv")}
    assert list(rows) == ["base", "coding", "tool_use", "memory", "TA", "TA each (lambda=0.5)",
                          "TA each (lambda=0.9)", "RAM"]
    # lambda 0.5 wins on the search split (target 0.5) although 0.9 would win on the held-out one (target 0.9)
    ta = rows["TA"]
    assert ta["grid_point"] == "lambda=0.5" and json.loads(ta["parameters"]) == {"lambda": 0.5}
    assert float(ta["search_average"]) == pytest.approx(expected(0.5, 0.5)[0], abs=1e-5)
    for objective in ("a", "b"):
        mean, se = expected(0.5, 0.9)
        assert float(ta[objective]) == pytest.approx(mean, abs=1e-5)
        assert float(ta[f"{objective}_stderr"]) == pytest.approx(se, abs=1e-6) and ta[f"{objective}_n"] == "4"
    assert float(rows["TA each (lambda=0.9)"]["avg"]) == pytest.approx(expected(0.9, 0.9)[0], abs=1e-5)
    assert float(rows["base"]["avg"]) == pytest.approx(expected(0.0, 0.9)[0], abs=1e-6)
    assert float(ta["avg_stderr"]) == pytest.approx(math.sqrt(2) * expected(0.5, 0.9)[1] / 2, abs=1e-6)

    grid = read_csv(run / "grid.csv")
    ta_grid = [r for r in grid if r["row"] == "TA"]
    assert [(r["grid_point"], r["chosen"]) for r in ta_grid] == [("lambda=0.1", ""), ("lambda=0.5", "yes"),
                                                                  ("lambda=0.9", "")]
    assert float(ta_grid[0]["a"]) == pytest.approx(expected(0.1, 0.5)[0], abs=1e-5)
    assert [r["row"] for r in grid[:4]] == ["base", "coding", "tool_use", "memory"]
    assert all((run / r["items_file"]).is_file() for r in grid)
    items = json.loads((run / "items" / "ref-base-test.json").read_text())
    assert [it["id"] for it in items["a"]["items"]] == ["test-0", "test-1", "test-2", "test-3"]
    # every evaluation says what produced it (backend and version, dtype, device; no code sandbox here)
    state = json.loads((run / "sweep.json").read_text())
    producer = state["references"]["heldout"]["base"]["scored_by"]["a"]
    assert {k: producer[k] for k in ("backend", "dtype", "device", "sandbox")} == \
        {"backend": "hf", "dtype": "float32", "device": "cpu", "sandbox": None}
    assert all(e["scored_by"]["a"] == producer for sides in state["points"].values() for e in sides.values())

    md = (run / "table.md").read_text()
    assert "| TA | 57.00 ± 1.29 | 57.00 ± 1.29 | 57.00 ± 0.91 | lambda=0.5 (97.00) |" in md
    assert "chosen on the `search` split" in md and "The paper chose its grid points on its test sets" in md
    assert not list(run.glob(".*tmp*")) and not list((run / "items").glob(".*tmp*"))  # nothing half-written


def test_a_resumed_sweep_recomputes_nothing_finished(swept, tiny_family, tmp_path):
    exp, tmp, summary, calls = swept
    table = (tmp / "run" / "table.md").read_text()
    CALLS.clear()
    again = run_sweep(exp, tmp / "run", resume=True, suite_factory=probe_factory, progress=False)
    assert CALLS == [] and again.evaluations == 0 and (tmp / "run" / "table.md").read_text() == table

    # stopped after 5 evaluations (2 suites each): the resumed run scores only the rest
    data = sweep_dict(tiny_family, tmp_path)
    CALLS.clear()
    INTERRUPT_AFTER.append(10)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(sweep_experiment_from_dict(data), tmp_path / "run", suite_factory=probe_factory, progress=False)
    finally:
        INTERRUPT_AFTER.clear()
    assert len(CALLS) == 10 and not (tmp_path / "run" / "table.md").exists()
    CALLS.clear()
    resumed = run_sweep(sweep_experiment_from_dict(data), tmp_path / "run", resume=True,
                        suite_factory=probe_factory, progress=False)
    assert len(CALLS) == calls - 10 and resumed.evaluations == summary.evaluations - 5
    assert (tmp_path / "run" / "table.md").read_text() == table


def test_an_existing_run_needs_resume_and_a_resumed_run_must_be_the_same_sweep(swept, tiny_family):
    exp, tmp, _, _ = swept
    with pytest.raises(ExperimentError, match="add --resume"):
        run_sweep(exp, tmp / "run", suite_factory=probe_factory, progress=False)
    changed = sweep_dict(tiny_family, tmp, seed=3)
    with pytest.raises(ExperimentError, match=r"differs from the one this run started with in \['seed'\]"):
        run_sweep(sweep_experiment_from_dict(changed), tmp / "run", resume=True, suite_factory=probe_factory,
                  progress=False)


def test_the_evaluation_cache_serves_a_new_sweep(tiny_family, tmp_path):
    data = sweep_dict(tiny_family, tmp_path, methods={"TA": {"method": "task_arithmetic", "grid": {"lambda": [0.5]}}},
                      cache={"enabled": True, "dir": str(tmp_path / "cache")})
    CALLS.clear()
    first = run_sweep(sweep_experiment_from_dict(data), tmp_path / "one", suite_factory=probe_factory, progress=False)
    assert len(CALLS) == 2 * first.evaluations and first.cache_hits == 0
    CALLS.clear()
    second = run_sweep(sweep_experiment_from_dict(data), tmp_path / "two", suite_factory=probe_factory,
                       progress=False)
    assert CALLS == [] and second.cache_hits == 2 * first.evaluations
    assert (tmp_path / "one" / "table.csv").read_text() == (tmp_path / "two" / "table.csv").read_text()


def test_blocks_merge_their_own_models_and_show_their_own_columns(tiny_family, tmp_path):
    data = sweep_dict(tiny_family, tmp_path, methods={"TA": {"method": "task_arithmetic", "grid": {"lambda": [0.5]}}},
                      domains={"coding": ["a"], "tool_use": ["b"]})
    data["sweep"]["blocks"] = {"ct": {"models": ["coding", "tool_use"], "title": "Code + Tool"},
                               "cm": {"models": ["coding", "memory"]}}
    exp = sweep_experiment_from_dict(data)
    assert exp.columns("ct") == ["a", "b"] and exp.columns("cm") == ["a"]
    CALLS.clear()
    run_sweep(exp, tmp_path / "run", suite_factory=probe_factory, progress=False)
    rows = read_csv(tmp_path / "run" / "table.csv")
    assert [(r["block"], r["model"]) for r in rows] == [
        ("ct", "base"), ("ct", "coding"), ("ct", "tool_use"), ("ct", "TA"),
        ("cm", "base"), ("cm", "coding"), ("cm", "memory"), ("cm", "TA")]
    assert all(r["b"] == "" for r in rows if r["block"] == "cm")
    md = (tmp_path / "run" / "table.md").read_text()
    assert "## Code + Tool" in md and "## coding + memory" in md
    # the cm block's merge holds two task vectors, not three: its probe sees a smaller share of the sum
    from evomerge.engine import ResidentMerger
    from evomerge.recipe import MergeRecipe

    recipe = MergeRecipe(base=str(tiny_family["base"]), models=[str(tiny_family[m]) for m in ("coding", "memory")],
                         method="task_arithmetic", parameters={"lambda": 0.5})
    merged = ResidentMerger(recipe.base, recipe.models).merge_state_dict(recipe)
    probe = ScaleProbe("a", exp.objectives["a"].suite)
    s = sum(float(((merged[k].float() - probe.base[k]) * t).sum()) for k, t in probe.tau.items()) / probe.norm2
    cm_ta = next(r for r in rows if r["block"] == "cm" and r["model"] == "TA")
    assert float(cm_ta["a"]) == pytest.approx(expected(s, 0.9)[0], abs=1e-5)
    assert torch.isfinite(torch.tensor(s))


def test_the_command_refuses_a_missing_checkpoint_before_writing_anything(tmp_path, capsys):
    sets = {"toy": {"base": "zoo/base", "models": {"coding": "zoo/coding"}, "objectives": {"coding": {"data": "toy"}},
                    "hint": "build the toy zoo first: evomerge zoo build zoo"}}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"model_sets": sets, "sweep": {"methods": {"RAM": {"method": "ram"}}}}))
    assert main(["sweep", str(exp), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint of 'base'" in err and "evomerge zoo build zoo" in err
    assert not (tmp_path / "run").exists()
    assert main(["sweep", str(exp), "--out", str(tmp_path / "run"), "--grid-max", "0"]) == 1
    assert main(["sweep", str(exp), "--out", str(tmp_path / "run"), "--methods", "TIES"]) == 1
    assert "--methods: ['TIES'] not in the sweep" in capsys.readouterr().err
