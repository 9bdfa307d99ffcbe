"""`evomerge search` and `evomerge front` from the command line, with a real generation-based suite."""

import json

import pytest
import yaml

from evomerge.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def write_experiment(tmp_path, family, **extra):
    exp = {
        "name": "cli",
        "base": str(family["base"]),
        "models": {a: str(family[a]) for a in ("coding", "tool_use", "memory")},
        "search_space": {"name": "ta", "layer_groups": {"count": 1},
                         "methods": {"task_arithmetic": {"weight": {"low": 0.0, "high": 1.0, "per_model": True}}}},
        "objectives": {
            "coding": {"kind": "coding", "data": "stdio_sample", "limit": 2, "generation": {"max_new_tokens": 8}},
            "tool_use": {"kind": "tool_use", "limit": 2, "generation": {"max_new_tokens": 8}},
        },
        "optimizer": {"name": "nsga2", "population": 2},
        "budget": 3,
        "references": False,
        "heldout": {"limit": 2},
        "workers": {"kind": "inline", "threads": 1},
        "cache": {"dir": str(tmp_path / "cache")},
        **extra,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.fixture(scope="module")
def searched(tiny_family, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    exp = write_experiment(tmp, tiny_family)
    assert main(["search", str(exp), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp, exp


def test_search_writes_the_run_directory(searched, capsys):
    tmp, _ = searched
    for f in ("study.db", "trials.csv", "hypervolume.csv", "front.json", "report.html", "front.png", "heldout.json"):
        assert (tmp / "run" / f).is_file(), f
    front = json.loads((tmp / "run" / "front.json").read_text())
    assert front["members"] and all(m["heldout"] for m in front["members"])


def test_an_existing_run_needs_resume_and_resume_honours_a_larger_budget(searched, capsys):
    tmp, exp = searched
    assert main(["search", str(exp), "--out", str(tmp / "run"), "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["search", str(exp), "--out", str(tmp / "run"), "--resume", "--budget", "4", "--no-progress"]) == 0
    assert "4 candidates" in capsys.readouterr().out
    assert len((tmp / "run" / "trials.csv").read_text().splitlines()) == 1 + 4


def test_front_lists_and_exports_a_member_that_merges(searched, capsys):
    tmp, _ = searched
    assert main(["front", str(tmp / "run")]) == 0
    out = capsys.readouterr().out
    assert "coding (search)" in out and "tool_use (held-out)" in out
    member = json.loads((tmp / "run" / "front.json").read_text())["members"][0]["trial"]
    recipe = tmp / "best.yaml"
    assert main(["front", str(tmp / "run"), "--export", str(member), "--out", str(recipe)]) == 0
    config = yaml.safe_load((tmp / "best.mergekit.yaml").read_text())
    assert config["merge_method"] == "task_arithmetic" and len(config["models"]) == 3
    assert main(["merge", str(recipe), str(tmp / "merged"), "--device", "cpu", "--no-progress"]) == 0
    assert (tmp / "merged" / "config.json").is_file()
    assert main(["front", str(tmp / "run"), "--export", "999", "--out", str(tmp / "x.yaml")]) == 1


def test_invalid_experiments_are_refused_before_anything_runs(tmp_path, tiny_family, capsys):
    exp = write_experiment(tmp_path, tiny_family, optimizer={"name": "hillclimb"})
    assert main(["search", str(exp), "--out", str(tmp_path / "run")]) == 1
    assert "optimizer.name" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_an_unknown_suite_is_one_line_before_the_run_directory_and_the_retry_works(tmp_path, tiny_family, capsys):
    good = yaml.safe_load(write_experiment(tmp_path, tiny_family, budget=1).read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**good, "objectives": {**good["objectives"],
                                                          "tool_use": {"kind": "tool_usage", "limit": 2}}}))
    assert main(["search", str(bad), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "objectives.tool_use: unknown suite 'tool_usage'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert main(["search", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0


@pytest.mark.mergekit
@pytest.mark.parametrize("method,params,layer0,attn1", [
    ("task_arithmetic", {"weight": [0.3, 0.5, 0.7]}, {"weight": [0.9, 0.1, 0.4]}, {"weight": 0.2}),
    ("ties", {"weight": 1.0, "density": [0.4, 0.6, 0.8]}, {"density": 0.3}, {"weight": [0.2, 0.5, 0.9], "density": 0.9}),
])
def test_exported_mergekit_config_merges_like_evomerge(tiny_family, tmp_path, method, params, layer0, attn1):
    """Per-layer and per-module parameters survive the export: mergekit 0.1.5 writes the same tensors."""
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    from evomerge.checkpoint import Checkpoint
    from evomerge.engine import ResidentMerger
    from evomerge.recipe import MergeRecipe
    from evomerge.search.mergekit_export import ExportError, to_mergekit

    models = [str(tiny_family[a]) for a in ("coding", "tool_use", "memory")]
    recipe = MergeRecipe(base=str(tiny_family["base"]), models=models, method=method, parameters=params, overrides=[
        {"layers": 0, "method": method, "parameters": {**params, **layer0}},
        {"layers": 1, "modules": ["attn"], "method": method, "parameters": {**params, **attn1}},
    ])
    names = [n for n, i in Checkpoint.open(recipe.base).tensors.items() if i.is_float]
    config = to_mergekit(recipe, names)
    run_merge(MergeConfiguration.model_validate(config), out_path=str(tmp_path / "mk"),
              options=MergeOptions(lazy_unpickle=True, copy_tokenizer=False, write_model_card=False, quiet=True))
    theirs = load_file(tmp_path / "mk" / "model.safetensors")
    ours = ResidentMerger(recipe.base, models).merge_state_dict(recipe)
    for name in names:
        assert torch.allclose(theirs[name].float(), ours[name].float(), atol=1e-6), name
    data = recipe.to_dict()
    mixed = MergeRecipe.from_dict({**data, "overrides": data["overrides"] + [{"layers": 1, "method": "ram"}]})
    with pytest.raises(ExportError, match="one method"):
        to_mergekit(mixed, names)
