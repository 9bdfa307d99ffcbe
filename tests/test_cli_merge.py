"""`evomerge merge` end to end: real methods, tiny Qwen2 / Llama checkpoints that reload and generate,
and every bad input giving a clear error, exit code 1 and no output directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.cli import main
from evomerge.io.provenance import RECIPE_FILE
from evomerge.resident import ResidentMerger

AGENTS = ("coding", "tool_use", "memory")


def _write_recipe(path: Path, family, **fields) -> Path:
    data = {"base": str(family["base"]), "models": [str(family[a]) for a in AGENTS], **fields}
    path.write_text(yaml.safe_dump(data))
    return path


def _load_dir(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _generates(path: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("def add(a, b):", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    return tok.decode(out[0])


def _assert_no_output(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, "temporary directory left behind"


def test_ram_plus_merge_of_qwen2_reloads_and_generates(tiny_family, tmp_path, capsys):
    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny_family, method="ram_plus",
                           parameters={"epsilon": 1e-5, "r": 0.1, "alpha": 2.0}, dtype="bfloat16")
    out = tmp_path / "merged"
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    _generates(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    provenance = yaml.safe_load((out / RECIPE_FILE).read_text())
    assert provenance["recipe"]["method"] == "ram_plus"
    assert len(provenance["inputs"]["models"]) == 3 and all(m["fingerprint"] for m in provenance["inputs"]["models"])
    # the provenance file re-runs the same merge
    again = tmp_path / "again"
    assert main(["merge", str(out / RECIPE_FILE), str(again), "--device", "cpu", "--no-progress"]) == 0
    first, second = _load_dir(out), _load_dir(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_llama_bf16_with_overrides_and_sharded_io(tiny_family_llama, tmp_path):
    # shard one input to check sharded reading end to end
    family = dict(tiny_family_llama)
    sharded = tmp_path / "memory_sharded"
    shutil.copytree(family["memory"], sharded)
    state = load_file(sharded / "model.safetensors")
    names = sorted(state)
    half = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in half.items():
        save_file({k: state[k] for k in keys}, sharded / fname, metadata={"format": "pt"})
    (sharded / "model.safetensors").unlink()
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, ks in half.items() for k in ks}}))

    fields = dict(method="ties", parameters={"density": 0.5, "weight": [1.0, 0.5, 0.5]}, seed=1, overrides=[
        {"layers": "0", "modules": ["mlp"], "method": "dare_ties", "parameters": {"density": 0.7}},
        {"modules": ["attn"], "method": "ram_plus", "parameters": {"rho_scope": "tensor"}},
        {"layers": [1], "method": "ram"},
    ])
    out_single = tmp_path / "single"
    out_sharded = tmp_path / "sharded"
    assert main(["merge", str(_write_recipe(tmp_path / "a.yaml", family, **fields)), str(out_single),
                 "--device", "cpu", "--no-progress", "--shard-size", "30KB"]) == 0
    family["memory"] = sharded
    assert main(["merge", str(_write_recipe(tmp_path / "b.yaml", family, **fields)), str(out_sharded),
                 "--device", "cpu", "--no-progress"]) == 0
    assert len(list(out_single.glob("model-*.safetensors"))) > 3
    assert (out_single / "model.safetensors.index.json").exists()
    a, b = _load_dir(out_single), _load_dir(out_sharded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == torch.bfloat16 for k in a)
    _generates(out_single)
    base = load_file(tiny_family_llama["base"] / "model.safetensors")
    # every rule did something different from the default ties merge
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("method, parameters", [
    ("ram_plus", {}),  # global rho: needs the statistics pass
    ("ties", {"density": 0.3}),
    ("dare_ties", {"density": 0.5}),
    ("task_arithmetic", {"weight": [0.3, 0.3, 0.4]}),
    ("linear", {}),
])
def test_resident_merge_equals_disk_merge_for_real_methods(tiny_family_llama, tmp_path, method, parameters):
    recipe_file = _write_recipe(tmp_path / "r.yaml", tiny_family_llama, method=method, parameters=parameters, seed=5)
    assert main(["merge", str(recipe_file), str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 0
    from evomerge.recipe import MergeRecipe

    recipe = MergeRecipe.from_yaml(recipe_file)
    disk = _load_dir(tmp_path / "out")
    merger = ResidentMerger(recipe.base, recipe.models)
    for _ in range(2):  # a second merge proves the method left the resident inputs untouched
        resident = merger.merge_state_dict(recipe)
        assert resident.keys() == disk.keys()
        assert all(torch.equal(resident[k], disk[k]) for k in disk)


def test_merge_into_live_model_matches_disk(tiny_family, tmp_path):
    from transformers import AutoModelForCausalLM

    from evomerge.recipe import MergeRecipe

    recipe_file = _write_recipe(tmp_path / "r.yaml", tiny_family, method="ram_plus")
    assert main(["merge", str(recipe_file), str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 0
    recipe = MergeRecipe.from_yaml(recipe_file)
    merger = ResidentMerger(recipe.base, recipe.models)
    model = AutoModelForCausalLM.from_pretrained(tiny_family["base"])
    merger.merge_into(recipe, model)
    disk = _load_dir(tmp_path / "out")
    state = model.state_dict()
    assert all(torch.equal(state[k], disk[k]) for k in disk)
    other = recipe.model_copy(update={"method": "ties", "parameters": {"density": 0.2}})
    merger.merge_into(MergeRecipe.from_dict(other.to_dict()), model)  # a second merge into the same model
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(model.state_dict()[name], disk[name])


# -- bad inputs: exit code 1, a message naming the culprit, no output directory ---------------------------


def _broken_agent(family, tmp_path, change) -> dict:
    bad = tmp_path / "broken_agent"
    shutil.copytree(family["tool_use"], bad)
    change(bad)
    return {**family, "tool_use": bad}


def _edit_weights(edit):
    def change(ckpt: Path):
        state = load_file(ckpt / "model.safetensors")
        edit(state)
        save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    return change


def _poison(state):
    state["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")


def _shard_with_escape(ckpt: Path):
    state = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    save_file(state, ckpt.parent / "stolen.safetensors", metadata={"format": "pt"})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: "../stolen.safetensors" for k in state}}))


def _corrupt(ckpt: Path):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-5000])


def _other_arch(ckpt: Path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (ckpt / "config.json").write_text(json.dumps(cfg))


BAD_CHECKPOINTS = {
    "shape mismatch": (_edit_weights(lambda s: s.update({"model.norm.weight": torch.ones(32)})),
                       "'model.norm.weight' has shape"),
    "missing tensor": (_edit_weights(lambda s: s.pop("lm_head.weight")), "'lm_head.weight'"),
    "NaN": (_edit_weights(_poison), "'model.layers.1.mlp.down_proj.weight' has 1 NaN"),
    "corrupt safetensors": (_corrupt, "corrupt or truncated safetensors"),
    "index path escaping": (_shard_with_escape, "outside the checkpoint directory"),
    "architecture mismatch": (_other_arch, "architecture"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_a_clean_error(tiny_family, tmp_path, capsys, case):
    change, message = BAD_CHECKPOINTS[case]
    family = _broken_agent(tiny_family, tmp_path, change)
    recipe = _write_recipe(tmp_path / "r.yaml", family, method="ram_plus")
    out = tmp_path / "out"
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    _assert_no_output(tmp_path, out)


@pytest.mark.parametrize("fields, message", [
    ({"method": "no_such_method"}, "unknown merge method 'no_such_method'"),
    ({"method": "ties", "parameters": {"density": 1.5}}, "'density' = 1.5 is outside"),
    ({"method": "ram_plus", "parameters": {"r": -1}}, "'r' = -1.0 is outside"),
    ({"method": "ties", "parameters": {"weight": [1, 2]}}, "has 2 values but there are 3 models"),
    ({"method": "ram", "overrides": [{"layers": "3-1", "method": "ties"}]}, "empty"),
])
def test_bad_recipe_is_a_clean_error(tiny_family, tmp_path, capsys, fields, message):
    recipe = _write_recipe(tmp_path / "r.yaml", tiny_family, **fields)
    out = tmp_path / "out"
    assert main(["merge", str(recipe), str(out), "--no-progress"]) == 1
    assert message in capsys.readouterr().err
    _assert_no_output(tmp_path, out)


def test_missing_recipe_and_existing_output(tiny_family, tmp_path, capsys):
    assert main(["merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out")]) == 1
    assert "not found" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    recipe = _write_recipe(tmp_path / "r.yaml", tiny_family, method="ram")
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress", "--overwrite"]) == 0
    assert (out / "model.safetensors").exists()


def test_cuda_requested_without_gpu(tiny_family, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    recipe = _write_recipe(tmp_path / "r.yaml", tiny_family, method="ram")
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--device", "cuda", "--no-progress"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err
    _assert_no_output(tmp_path, tmp_path / "out")


def test_console_script_exits_fast_after_a_merge_without_losing_output(tiny_family, tmp_path):
    """The console entry point skips Python's teardown after a successful merge: the printed line and every
    output file must still be complete; a failing merge keeps the ordinary exit and its error message."""
    import subprocess
    import sys

    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny_family, method="ties", parameters={"density": 0.5})
    out = tmp_path / "merged"
    code = "import sys; from evomerge.cli import console_main; sys.argv[0] = 'evomerge'; console_main()"
    done = subprocess.run([sys.executable, "-c", code, "merge", str(recipe), str(out), "--device", "cpu",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}")
    in_process = tmp_path / "in_process"
    assert main(["merge", str(recipe), str(in_process), "--device", "cpu", "--no-progress"]) == 0
    written, expected = _load_dir(out), _load_dir(in_process)
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert (out / RECIPE_FILE).read_text() == (in_process / RECIPE_FILE).read_text()

    failed = subprocess.run([sys.executable, "-c", code, "merge", str(recipe), str(out), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "exists" in failed.stderr


def test_merge_sets_a_passive_openmp_wait_before_torch_loads(tiny_family, tmp_path):
    """`evomerge merge` sets OMP_WAIT_POLICY=PASSIVE (unless set) before torch loads OpenMP, which reads it only
    then. A command module that imported torch while the CLI builds its parser made that too late: spinning
    OpenMP threads, and row-blocked merges start thousands of parallel regions (measured on the 0.5B fixture
    under load 7: 24-34 s of user CPU instead of 4.8 s)."""
    import os
    import subprocess
    import sys

    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny_family, method="task_arithmetic")
    code = ("import os, sys; from evomerge.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules, 'building the parser imported torch'; "
            "from evomerge.cli import main; import evomerge.engine as e; real = e.merge_to_disk; "
            "e.merge_to_disk = lambda *a, **k: (print('policy', os.environ.get('OMP_WAIT_POLICY')), real(*a, **k))[1]; "
            "sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code, "merge", str(recipe), str(tmp_path / "out"), "--device", "cpu",
                           "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "policy PASSIVE" in done.stdout


def test_workspace_option_changes_memory_not_the_result(tiny_family, tmp_path, capsys):
    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny_family, method="ram", dtype="bfloat16")
    outs = {}
    for workspace in ("none", "1KiB", "16MiB"):
        out = tmp_path / f"out-{workspace}"
        assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress", "--workspace", workspace]) == 0
        outs[workspace] = (out / "model.safetensors").read_bytes()
    assert outs["1KiB"] == outs["none"] == outs["16MiB"]
    assert main(["merge", str(recipe), str(tmp_path / "bad"), "--no-progress", "--workspace", "lots"]) == 1
    assert "--workspace 'lots': use a size like 16MiB" in capsys.readouterr().err


def test_threads_option_changes_speed_not_the_result(tiny_family, tmp_path, capsys):
    import torch

    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny_family, method="ties", dtype="bfloat16")
    threads_before = torch.get_num_threads()
    outs = {}
    for threads in ("1", "3"):
        out = tmp_path / f"out-{threads}"
        assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress", "--workspace", "1KiB",
                     "--threads", threads]) == 0
        outs[threads] = (out / "model.safetensors").read_bytes()
    assert outs["1"] == outs["3"] and torch.get_num_threads() == threads_before
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            main(["merge", str(recipe), str(tmp_path / "bad"), "--no-progress", "--threads", bad])
        assert "--threads: expected a whole number >= 1" in capsys.readouterr().err
