"""The io package's own helpers: atomic writes, the all-tensors reader, provenance both ways."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.errors import CheckpointError
from evomerge.io.atomic import replace_atomically, write_bytes_atomic, write_json_atomic, write_text_atomic
from evomerge.io.reader import iter_checkpoint_tensors


def test_atomic_write_replaces_whole_files_and_leaves_no_debris(tmp_path):
    target = tmp_path / "sub" / "x.json"  # the parent is created
    write_json_atomic(target, {"b": 1, "a": float("inf")}, default=str)
    assert target.read_text() == '{\n  "b": 1,\n  "a": Infinity\n}\n'
    write_text_atomic(target, "new", durable=True)
    assert target.read_text() == "new"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"

    def fails(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(target, fails)
    assert target.read_bytes() == b"\x00\x01"  # the old content, untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temporary sibling left


def test_iter_checkpoint_tensors_reads_every_tensor_and_checks_it(tiny_family, tmp_path):
    expected = load_file(tiny_family["coding"] / "model.safetensors")
    got = dict(iter_checkpoint_tensors(tiny_family["coding"]))
    assert list(got) == list(expected)  # the file's order
    assert all(torch.equal(got[n], expected[n]) for n in expected)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_family["coding"], broken)
    state = dict(expected)
    name = "model.layers.1.mlp.up_proj.weight"
    state[name] = state[name].clone()
    state[name][0, 0] = float("inf")
    save_file(state, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"{broken}/model.safetensors: tensor '{name}' has 1 NaN/inf"):
        list(iter_checkpoint_tensors(broken))


def test_provenance_round_trip(tiny_family, tmp_path):
    """merge_recipe.yaml written by a merge is read back as the same recipe; config.json says the output dtype."""
    import json

    from evomerge.engine import merge_to_disk
    from evomerge.io.provenance import RECIPE_FILE, load_recipe_file
    from evomerge.recipe import MergeRecipe

    recipe = MergeRecipe.from_dict({"base": str(tiny_family["base"]), "models": [str(tiny_family["coding"])],
                                    "method": "task_arithmetic", "parameters": {"lambda": 0.5}, "seed": 4})
    merge_to_disk(recipe, tmp_path / "out", dtype="bfloat16")
    assert load_recipe_file(tmp_path / "out" / RECIPE_FILE).to_dict() == recipe.to_dict()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


def test_old_module_paths_still_import():
    """evomerge.checkpoint, evomerge.yamlio and evomerge.engine.ResidentMerger are kept for one release."""
    import evomerge.checkpoint as old_checkpoint
    import evomerge.engine as engine
    import evomerge.io.reader as reader
    import evomerge.io.writer as writer
    import evomerge.yamlio as old_yamlio
    from evomerge.io.yaml_files import load_yaml
    from evomerge.resident import ResidentMerger

    assert old_checkpoint.Checkpoint is reader.Checkpoint and old_checkpoint.ShardWriter is writer.ShardWriter
    assert old_yamlio.load_yaml is load_yaml
    assert engine.ResidentMerger is ResidentMerger and engine.load_recipe_file is not None
    with pytest.raises(AttributeError):
        engine.no_such_name  # noqa: B018


def test_synthetic_is_kept_as_an_alias_of_tiny_checkpoints():
    import evomerge.synthetic as old
    import evomerge.tiny_checkpoints as new

    assert old.build_tiny_family is new.build_tiny_family and old.TinyShape is new.TinyShape


def test_provenance_of_a_recipe_with_relative_paths_reruns_from_another_directory(tiny_family, tmp_path, monkeypatch):
    """A recipe built in Python with paths relative to the current directory used to be written as is, so
    `evomerge merge OUT/merge_recipe.yaml` from any other directory looked for the inputs in the wrong place."""
    from evomerge.engine import merge_to_disk
    from evomerge.io.provenance import RECIPE_FILE, load_recipe_file
    from evomerge.recipe import MergeRecipe

    shutil.copytree(tiny_family["base"], tmp_path / "work" / "base")
    shutil.copytree(tiny_family["coding"], tmp_path / "work" / "coding")
    monkeypatch.chdir(tmp_path / "work")
    recipe = MergeRecipe.from_dict({"base": "base", "models": ["coding"], "method": "task_arithmetic"})
    first = merge_to_disk(recipe, tmp_path / "out")
    monkeypatch.chdir(tmp_path)  # elsewhere: 'base' and 'coding' mean nothing here
    again = load_recipe_file(tmp_path / "out" / RECIPE_FILE)
    assert again.base == str(tmp_path / "work" / "base") and again.models == [str(tmp_path / "work" / "coding")]
    second = merge_to_disk(again, tmp_path / "again")
    assert (second.out_dir / "model.safetensors").read_bytes() == (first.out_dir / "model.safetensors").read_bytes()


def test_overwrite_keeps_the_old_output_when_the_final_rename_fails(tmp_path, monkeypatch):
    """--overwrite moves the old output aside, then renames the new one into place; when that last rename
    failed, the old output used to stay under a hidden name and `out` was gone."""
    from pathlib import Path

    from evomerge.io.staging import staged_output_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "weights").write_text("old")
    real_rename = Path.rename

    def rename(self, target):
        if Path(target) == out and self.name.startswith(".out.partial-"):
            raise OSError(28, "No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    from evomerge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="could not write the output: No space left"):
        with staged_output_dir(out, overwrite=True) as staging:
            (staging / "weights").write_text("new")
    assert (out / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or trash left behind
