"""Hugging Face Hub ids as checkpoint names, the Hub cache layout, and links that must not leak files.

Every test runs offline (HF_HUB_OFFLINE=1, see conftest.py) on a fake Hugging Face cache built in a tmp
folder with the real layout: models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
refs/<branch>}.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.cli import main
from evomerge.engine import merge_to_disk
from evomerge.errors import CheckpointError, ExperimentError
from evomerge.experiment import Experiment
from evomerge.io.hub import hub_origin, is_hub_id, parse_hub_id, resolve_checkpoint, with_local_checkpoints
from evomerge.io.reader import Checkpoint
from evomerge.recipe import MergeRecipe

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "fedcba9876543210fedcba9876543210fedcba98"


def _sharded_copy(src: Path, dst: Path, n_files: int = 3) -> Path:
    """The checkpoint at `src` as `n_files` shards with an index, as save_pretrained writes a large model."""
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    names = list(state)
    weight_map = {}
    for i in range(n_files):
        fname = f"model-{i + 1:05d}-of-{n_files:05d}.safetensors"
        save_file({k: state[k] for k in names[i::n_files]}, dst / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in names[i::n_files]})
    (dst / "model.safetensors").unlink()
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def add_to_cache(cache: Path, repo_id: str, src: Path, commit: str = SHA, ref: str | None = "main") -> Path:
    """Put the files of checkpoint `src` into a Hugging Face cache as huggingface_hub does; return the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub(tiny_family, tmp_path, monkeypatch):
    """A fake offline Hub cache holding org/base (single file) and org/coder, org/memory (3 shards each)."""
    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    add_to_cache(cache, "org/base", tiny_family["base"])
    for agent in ("coding", "memory"):
        add_to_cache(cache, f"org/{agent}", _sharded_copy(tiny_family[agent], tmp_path / "plain" / agent))
    return cache


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(out.glob("*.safetensors")):
        state.update(load_file(f))
    return state


# -- telling a Hub id from a path ----------------------------------------------------------------------


@pytest.mark.parametrize("name, parsed", [
    ("org/name", ("org/name", None)),
    ("Gen-Verse/ReasonFlux-Coder-7B", ("Gen-Verse/ReasonFlux-Coder-7B", None)),
    ("Qwen/Qwen2.5-7B-Instruct@main", ("Qwen/Qwen2.5-7B-Instruct", "main")),
    (f"org/name@{SHA}", ("org/name", SHA)),
    ("org/name@refs/pr/1", ("org/name", "refs/pr/1")),
    ("./org/name", None), ("/abs/path", None), ("~/models/x", None), ("name", None), ("a/b/c", None),
    ("../zoo/base", None), ("org--x/name", None), ("org/na..me", None), ("org/name.", None),
    ("hf://org/name@v1", ("org/name", "v1")),
])
def test_hub_id_shape(name, parsed):
    assert parse_hub_id(name) == parsed


def test_a_mergekit_file_names_hub_ids():
    from evomerge.mergekit_compat.importer import _model_path

    assert _model_path("Gen-Verse/ReasonFlux-Coder-7B", "f.yaml: models[0]") == "Gen-Verse/ReasonFlux-Coder-7B"


def test_a_local_directory_of_that_name_wins(tiny_family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("org/base")
    shutil.copytree(tiny_family["base"], tmp_path / "org" / "base")
    assert not is_hub_id("org/base")
    resolved = resolve_checkpoint("org/base")
    assert resolved.path == Path("org/base") and resolved.origin is None
    assert Checkpoint.open("org/base").origin is None


# -- resolving through the cache --------------------------------------------------------------------------


def test_hub_ids_resolve_offline_from_the_cache(hub):
    ckpt = Checkpoint.open("org/coding")
    assert ckpt.path == hub.resolve() / "models--org--coding" / "snapshots" / SHA
    assert (ckpt.origin.repo_id, ckpt.origin.revision) == ("org/coding", SHA)
    assert len(ckpt.files) == 3 and all(f.is_symlink() for f in ckpt.files)
    assert Checkpoint.open(f"org/coding@{SHA}").fingerprint == ckpt.fingerprint
    # a second revision in the same repo, reached by its tag
    add_to_cache(hub, "org/coding", hub / "models--org--coding" / "snapshots" / SHA, commit=SHA2, ref="v2")
    assert Checkpoint.open("org/coding@v2").origin.revision == SHA2
    assert hub_origin(hub / "models--org--coding" / "snapshots" / SHA2).pinned == f"org/coding@{SHA2}"


def test_an_uncached_hub_id_offline_says_what_was_tried(hub):
    with pytest.raises(CheckpointError) as err:
        Checkpoint.open("org/absent")
    text = str(err.value)
    assert "'org/absent' is not a local directory" in text and "Hugging Face Hub id" in text
    assert "HF_HUB_OFFLINE" in text and str(hub.resolve()) in text
    with pytest.raises(CheckpointError, match="revision nope"):
        Checkpoint.open("org/coding@nope")


def test_hub_layout_sharded_checkpoints_merge_like_plain_files_and_provenance_pins_the_commit(
        hub, tiny_family, tmp_path):
    params = {"lambda": 0.7, "density": 0.5}
    via_hub = MergeRecipe(base="org/base", models=["org/coding", "org/memory"], method="ties", parameters=params)
    plain = MergeRecipe(base=str(tiny_family["base"]), models=[str(tmp_path / "plain" / a) for a in ("coding", "memory")],
                        method="ties", parameters=params)
    merge_to_disk(via_hub, tmp_path / "out_hub")
    merge_to_disk(plain, tmp_path / "out_plain")
    a, b = _tensors(tmp_path / "out_hub"), _tensors(tmp_path / "out_plain")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the side files are copied as content, not as links into the cache
    copied = [f for f in (tmp_path / "out_hub").iterdir() if f.name.startswith("tokenizer")]
    assert copied and not any(f.is_symlink() for f in copied)
    record = yaml.safe_load((tmp_path / "out_hub" / "merge_recipe.yaml").read_text())
    assert record["inputs"]["base"]["hub"] == {"repo_id": "org/base", "revision": SHA}
    assert [m["hub"]["repo_id"] for m in record["inputs"]["models"]] == ["org/coding", "org/memory"]
    assert record["recipe"]["base"] == f"org/base@{SHA}"
    assert record["recipe"]["models"] == [f"org/coding@{SHA}", f"org/memory@{SHA}"]
    assert "hub" not in yaml.safe_load((tmp_path / "out_plain" / "merge_recipe.yaml").read_text())["inputs"]["base"]
    # the pinned provenance file re-runs the same merge
    assert main(["merge", str(tmp_path / "out_hub" / "merge_recipe.yaml"), str(tmp_path / "again")]) == 0
    again = _tensors(tmp_path / "again")
    assert all(torch.equal(again[k], a[k]) for k in a)


def test_a_recipe_file_names_hub_ids(hub, tmp_path):
    recipe_file = tmp_path / "recipes" / "r.yaml"
    recipe_file.parent.mkdir()
    recipe_file.write_text(yaml.safe_dump({"base": "org/base", "models": ["org/coding", f"org/memory@{SHA}"],
                                           "method": "task_arithmetic", "parameters": {"lambda": 0.5}}))
    recipe = MergeRecipe.from_yaml(recipe_file)
    assert (recipe.base, recipe.models) == ("hf://org/base", ["hf://org/coding", f"hf://org/memory@{SHA}"])
    assert main(["merge", str(recipe_file), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # a local folder of that name next to the recipe wins over the Hub id
    shutil.copytree(hub / "models--org--base" / "snapshots" / SHA, tmp_path / "recipes" / "org" / "base", symlinks=False)
    assert MergeRecipe.from_yaml(recipe_file).base == str(tmp_path / "recipes" / "org" / "base")


def test_an_experiment_names_hub_ids_and_a_run_pins_them(hub, tmp_path):
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "name": "hub", "base": "org/base", "models": {"coding": "org/coding", "memory": f"org/memory@{SHA}"},
        "objectives": {"coding": {"data": "toy"}, "memory": {"data": "toy"}}, "budget": 2,
    }))
    exp = Experiment.from_yaml(exp_file)
    assert exp.base == "hf://org/base" and exp.models["memory"] == f"hf://org/memory@{SHA}"
    # a folder org/base in the directory a run starts from does not turn the file's Hub id into that folder
    (tmp_path / "org" / "base").mkdir(parents=True)
    pinned = with_local_checkpoints(exp)
    assert pinned.base == str(hub.resolve() / "models--org--base" / "snapshots" / SHA)
    assert hub_origin(pinned.models["coding"]).pinned == f"org/coding@{SHA}"
    broken = exp.model_copy(update={"models": {**exp.models, "memory": "org/absent"}})
    with pytest.raises(ExperimentError, match=r"the checkpoint of 'memory' \(org/absent\)"):
        with_local_checkpoints(broken)


def test_analyze_and_evaluate_take_hub_ids(hub, tmp_path, capsys):
    assert main(["analyze", "--base", "org/base", "--models", "org/coding", "org/memory", "--no-progress"]) == 0
    assert "coding" in capsys.readouterr().out
    out_json = tmp_path / "gen.json"
    assert main(["evaluate", "org/coding", "--suite", "coding", "--limit", "1", "--max-new-tokens", "4", "--plain",
                 "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["model"] == "org/coding" and result["hub"] == {"repo_id": "org/coding", "revision": SHA}
    assert main(["evaluate", "org/absent", "--suite", "coding", "--limit", "1"]) == 1
    assert "org/absent" in capsys.readouterr().err


# -- links ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["tokenizer_config.json", "config.json", "model.safetensors"])
def test_a_link_to_a_foreign_file_is_refused_and_nothing_is_written(tiny_family, tmp_path, victim):
    ckpt = tmp_path / "base"
    shutil.copytree(tiny_family["base"], ckpt)
    secret = tmp_path / "secret.txt"
    secret.write_bytes((ckpt / victim).read_bytes())  # same content: only the link's target is wrong
    (ckpt / victim).unlink()
    (ckpt / victim).symlink_to(secret)
    recipe = MergeRecipe(base=str(ckpt), models=[str(tiny_family["coding"])], method="task_arithmetic",
                         parameters={"lambda": 0.5})
    with pytest.raises(CheckpointError) as err:
        merge_to_disk(recipe, tmp_path / "out")
    assert f"{ckpt / victim}: links to {secret.resolve()}" in str(err.value)
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_links_inside_the_checkpoint_are_followed(tiny_family, tmp_path):
    ckpt = tmp_path / "base"
    shutil.copytree(tiny_family["base"], ckpt)
    (ckpt / "real").mkdir()
    (ckpt / "tokenizer_config.json").rename(ckpt / "real" / "tokenizer_config.json")
    (ckpt / "tokenizer_config.json").symlink_to(Path("real") / "tokenizer_config.json")
    assert Checkpoint.open(ckpt).fingerprint == Checkpoint.open(tiny_family["base"]).fingerprint


def test_a_snapshot_linking_into_another_repos_blobs_is_refused(hub):
    snapshot = hub / "models--org--coding" / "snapshots" / SHA
    other = next((hub / "models--org--base" / "blobs").iterdir())
    (snapshot / "tokenizer_config.json").unlink()
    (snapshot / "tokenizer_config.json").symlink_to(other)
    with pytest.raises(CheckpointError, match="outside the checkpoint directory .* blobs folder"):
        Checkpoint.open("org/coding")


def test_a_search_run_records_the_resolved_commits(hub, tmp_path):
    from evomerge.runner import SearchRunner

    exp = Experiment.from_dict({
        "name": "hub", "base": "org/base", "models": {"coding": "org/coding", "memory": "org/memory"},
        "objectives": {"coding": {"data": "toy"}, "memory": {"data": "toy"}}, "budget": 2,
    })
    runner = SearchRunner(exp, tmp_path / "run", progress=False, report=False)
    runner._prepare()  # everything before the first candidate: resolution, the space, the run record
    record = yaml.safe_load((tmp_path / "run" / "experiment.yaml").read_text())
    assert hub_origin(record["base"]).pinned == f"org/base@{SHA}"
    assert [hub_origin(p).pinned for p in record["models"].values()] == [f"org/coding@{SHA}", f"org/memory@{SHA}"]
    assert runner.setup.base == record["base"]  # the workers read the same snapshot


def test_online_resolution_downloads_weights_config_and_tokenizer_only(hub, monkeypatch):
    """Online, the public snapshot_download is asked for the weights, config and side files (no network here:
    it is replaced by a stand-in that answers with the cached snapshot, as the real one does after downloading)."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(hub.resolve() / ("models--" + repo_id.replace("/", "--")) / "snapshots" / SHA)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    resolved = resolve_checkpoint("org/memory@main")
    assert resolved.origin.pinned == f"org/memory@{SHA}"
    (repo_id, kwargs), = calls
    assert repo_id == "org/memory" and kwargs["revision"] == "main" and kwargs["local_files_only"] is False
    assert kwargs["cache_dir"] == str(hub.resolve())
    patterns = kwargs["allow_patterns"]
    assert {"*.safetensors", "*.safetensors.index.json", "config.json", "tokenizer*", "generation_config.json"} <= set(patterns)
    assert not any(p in patterns for p in ("*", "*.bin", "*.pt", "*.py"))  # no pickles, no remote code
    resolve_checkpoint("org/memory@main")
    assert len(calls) == 1  # once per process: every later open reads the same commit


def test_a_sweep_model_set_names_hub_ids_and_its_run_pins_them(hub, tmp_path):
    from evomerge.sweep import SweepRunner
    from evomerge.sweep_experiment import load_sweep_experiment, parse_paths

    exp_file = tmp_path / "sweep.yaml"
    exp_file.write_text(yaml.safe_dump({
        "model_sets": {"hub": {"base": "org/base", "models": {"coding": "org/coding"},
                               "objectives": {"coding": {"data": "toy"}}}},
        "sweep": {"methods": {"TA": {"method": "task_arithmetic", "parameters": {"lambda": 0.5}}}},
    }))
    exp = load_sweep_experiment(exp_file, paths=parse_paths(f"coding=org/memory@{SHA}"))
    assert (exp.base, exp.models["coding"]) == ("hf://org/base", f"org/memory@{SHA}")
    runner = SweepRunner(exp, tmp_path / "run", progress=False)
    runner._prepare()
    record = yaml.safe_load((tmp_path / "run" / "experiment.yaml").read_text())
    assert hub_origin(record["base"]).pinned == f"org/base@{SHA}"
    assert hub_origin(record["models"]["coding"]).pinned == f"org/memory@{SHA}"
    point = runner.points[next(iter(runner.points))][0]
    assert point.recipe["base"] == record["base"]  # the merges read the pinned snapshot
