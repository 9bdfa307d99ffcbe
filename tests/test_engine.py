"""The merge engine: one per-tensor path, a disk sink and a resident sink (evomerge/engine.py).

Engine mechanics are tested with small methods defined here (registered for the test only), so a
failure points at the engine, not at a method's math; the real methods run end to end in
test_cli_merge.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.engine import merge_to_disk, tensor_seed
from evomerge.resident import ResidentMerger
from evomerge.errors import CheckpointError, RecipeError
from evomerge.methods import registry
from evomerge.methods.spec import MethodSpec, ParamSpec
from evomerge.recipe import MergeRecipe

CALLS: list = []  # (method, tensor name, TensorContext) of the toy methods


def _wsum(base, deltas, params, ctx):
    CALLS.append(("toy_wsum", ctx.name, ctx))
    out = base.clone()
    for w, d in zip(params["weight"], deltas):
        out.add_(d, alpha=w)
    return out


def _noise(base, deltas, params, ctx):
    gen = torch.Generator(device=base.device).manual_seed(ctx.seed)
    return base + params["scale"] * torch.randn(base.shape, generator=gen, device=base.device)


def _global(base, deltas, params, ctx):
    CALLS.append(("toy_global", ctx.name, ctx))
    assert ctx.global_overlap is not None and ctx.global_overlap.epsilon == params["epsilon"]
    return base + sum(deltas) * 0.0


TOY_METHODS = {
    "toy_wsum": MethodSpec("toy_wsum", "base + sum_t w_t tau_t", _wsum,
                           params=(ParamSpec("weight", 1.0, "per-model weight", low=-2, high=2, per_model=True),)),
    "toy_noise": MethodSpec("toy_noise", "base + seeded noise", _noise, randomized=True,
                            params=(ParamSpec("scale", 1e-3, "noise std", low=0, high=1),)),
    "toy_global": MethodSpec("toy_global", "asks for whole-model overlap counts", _global,
                             global_overlap_param="epsilon",
                             params=(ParamSpec("epsilon", 1e-5, "threshold", low=0, high=1, low_inclusive=False),)),
}


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    for name, spec in TOY_METHODS.items():
        monkeypatch.setitem(registry.METHODS, name, spec)
    CALLS.clear()
    yield


def _recipe(family, method="toy_wsum", **kw) -> MergeRecipe:
    models = [str(family[k]) for k in ("coding", "tool_use", "memory")]
    return MergeRecipe(base=str(family["base"]), models=models, method=method, **kw)


def _load_dir(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _expected_wsum(family, weights) -> dict[str, torch.Tensor]:
    base = load_file(family["base"] / "model.safetensors")
    agents = [load_file(family[k] / "model.safetensors") for k in ("coding", "tool_use", "memory")]
    out = {}
    for name, b in base.items():
        b32 = b.float()
        acc = b32.clone()
        for w, a in zip(weights, agents):
            acc.add_(a[name].float() - b32, alpha=w)
        out[name] = acc
    return out


def test_tensor_seed_is_stable_across_processes():
    ours = tensor_seed(7, "model.layers.0.mlp.up_proj.weight")
    code = "from evomerge.engine import tensor_seed; print(tensor_seed(7, 'model.layers.0.mlp.up_proj.weight'))"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert int(out.stdout) == ours
    assert tensor_seed(7, "a") != tensor_seed(7, "b") != tensor_seed(8, "b")
    assert 0 <= ours < 2**63


def test_disk_merge_equals_the_formula(tiny_family, tmp_path):
    weights = [0.5, -0.25, 1.0]
    result = merge_to_disk(_recipe(tiny_family, parameters={"weight": weights}), tmp_path / "out")
    merged = _load_dir(tmp_path / "out")
    expected = _expected_wsum(tiny_family, weights)
    assert merged.keys() == expected.keys()
    for name in expected:
        assert merged[name].dtype == torch.float32  # the base's dtype
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=0)
    assert result.files == ("model.safetensors",) and result.dtype == "float32"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["dtype"] == "float32" and config["architectures"] == ["Qwen2ForCausalLM"]
    for side in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (tmp_path / "out" / side).read_bytes() == (tiny_family["base"] / side).read_bytes()


def test_output_dtype_and_sharding(tiny_family_llama, tmp_path):
    recipe = _recipe(tiny_family_llama, parameters={"weight": 0.5}, dtype="float32")
    merge_to_disk(recipe, tmp_path / "one")
    result = merge_to_disk(recipe, tmp_path / "many", shard_size="40KB", dtype="bfloat16")
    assert len(result.files) > 3
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(result.files)
    one, many = _load_dir(tmp_path / "one"), _load_dir(tmp_path / "many")
    assert one.keys() == many.keys() == set(index["weight_map"])
    for name in one:
        assert many[name].dtype == torch.bfloat16
        assert torch.equal(many[name], one[name].to(torch.bfloat16))
    assert json.loads((tmp_path / "many" / "config.json").read_text())["dtype"] == "bfloat16"


def test_overrides_pick_the_rule_per_layer_and_module(tiny_family, tmp_path):
    recipe = _recipe(tiny_family, parameters={"weight": 1.0}, overrides=[
        {"layers": "1", "modules": ["mlp"], "parameters": {"weight": [0.0, 0.0, 0.0]}},
        {"modules": ["embed", "lm_head"], "method": "toy_noise", "parameters": {"scale": 0.0}},
        {"modules": [r"self_attn\.q_proj"], "parameters": {"weight": [1.0, 0.0, 0.0]}},
    ])
    merge_to_disk(recipe, tmp_path / "out")
    merged = _load_dir(tmp_path / "out")
    base = load_file(tiny_family["base"] / "model.safetensors")
    coding = load_file(tiny_family["coding"] / "model.safetensors")
    full = _expected_wsum(tiny_family, [1.0, 1.0, 1.0])
    for name in merged:
        if name.startswith("model.layers.1.mlp."):
            assert torch.equal(merged[name], base[name]), name
        elif "embed_tokens" in name or name.startswith("lm_head"):
            assert torch.equal(merged[name], base[name]), name
        elif "q_proj" in name:
            assert torch.equal(merged[name], coding[name]), name
        else:
            assert torch.equal(merged[name], full[name]), name
    assert {c[1] for c in CALLS if c[1].startswith("model.layers.0.mlp")}  # layer 0 MLP went through toy_wsum


def test_randomized_methods_get_a_stable_per_tensor_seed(tiny_family, tmp_path):
    recipe = _recipe(tiny_family, method="toy_noise", seed=3)
    merge_to_disk(recipe, tmp_path / "a")
    merge_to_disk(recipe, tmp_path / "b")
    merge_to_disk(_recipe(tiny_family, method="toy_noise", seed=4), tmp_path / "c")
    a, b, c = (_load_dir(tmp_path / x) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a)
    resident = ResidentMerger(recipe.base, recipe.models).merge_state_dict(recipe)
    assert all(torch.equal(a[k], resident[k]) for k in a)  # seed does not depend on the path or order


def test_global_overlap_is_counted_once_per_epsilon(tiny_family, tmp_path):
    from evomerge.engine import OverlapCache
    from evomerge.taskvectors import overlap_counts

    recipe = _recipe(tiny_family, method="toy_global", parameters={"epsilon": 1e-5}, overrides=[
        {"layers": "0", "parameters": {"epsilon": 1e-3}},
    ])
    cache = OverlapCache()
    merge_to_disk(recipe, tmp_path / "a", overlap_cache=cache)
    assert cache.passes == 1  # both epsilons in one pass
    merge_to_disk(recipe, tmp_path / "b", overlap_cache=cache)
    assert cache.passes == 1  # reused
    seen = {c[2].global_overlap.epsilon: c[2].global_overlap for c in CALLS if c[0] == "toy_global"}
    assert set(seen) == {1e-5, 1e-3}
    # the counts are the whole model's, whatever tensor asks
    base = load_file(tiny_family["base"] / "model.safetensors")
    agents = [load_file(tiny_family[k] / "model.safetensors") for k in ("coding", "tool_use", "memory")]
    total = None
    for name, b in base.items():
        counts = overlap_counts([a[name].float() - b.float() for a in agents], 1e-3)
        total = counts if total is None else total + counts
    assert seen[1e-3].shared == total.shared and seen[1e-3].unique == total.unique and seen[1e-3].total == total.total
    assert seen[1e-3].total == sum(t.numel() for t in base.values())


def test_resident_merge_equals_disk_merge(tiny_family_llama, tmp_path):
    recipe = _recipe(tiny_family_llama, parameters={"weight": [0.7, 0.2, -0.4]})
    merge_to_disk(recipe, tmp_path / "disk")
    disk = _load_dir(tmp_path / "disk")
    native = ResidentMerger(recipe.base, recipe.models, device="cpu")
    f32 = ResidentMerger(recipe.base, recipe.models, device="cpu", keep="float32")
    assert f32.resident_bytes() > native.resident_bytes()
    for merger in (native, f32):
        for _ in range(2):  # nothing resident is modified by a merge
            state = merger.merge_state_dict(recipe)
            assert state.keys() == disk.keys()
            for name in disk:
                assert state[name].dtype == torch.bfloat16
                assert torch.equal(state[name], disk[name]), name


def test_merge_into_a_live_model(tiny_family, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = _recipe(tiny_family, parameters={"weight": [0.3, 0.3, 0.3]})
    merge_to_disk(recipe, tmp_path / "disk")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "disk")
    model = AutoModelForCausalLM.from_pretrained(tiny_family["base"])
    params_before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    merger = ResidentMerger(recipe.base, recipe.models)
    merger.merge_into(recipe, model)
    state, want = model.state_dict(), reference.state_dict()
    assert {k: v.data_ptr() for k, v in state.items()} == params_before  # copied in place
    for name in want:
        assert torch.equal(state[name], want[name]), name
    # a module without lm_head: refused before anything is copied
    inner = AutoModelForCausalLM.from_pretrained(tiny_family["base"]).model
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    with pytest.raises(CheckpointError, match="'lm_head.weight' has no counterpart"):
        merger.merge_into(recipe, inner)
    assert all(torch.equal(v, before[k]) for k, v in inner.state_dict().items())
    # ... unless name_map says where each tensor goes (None = no counterpart is still an error)
    with pytest.raises(CheckpointError):
        merger.merge_into(recipe, inner, name_map=lambda n: n.removeprefix("model."))
    inner.lm_head = torch.nn.Linear(64, 1000, bias=False)
    merger.merge_into(recipe, inner, name_map=lambda n: n.removeprefix("model."))
    for name, value in want.items():
        assert torch.equal(inner.state_dict()[name.removeprefix("model.")], value), name


def test_resident_refuses_other_inputs(tiny_family):
    recipe = _recipe(tiny_family)
    merger = ResidentMerger(recipe.base, recipe.models)
    other = MergeRecipe(base=recipe.base, models=list(reversed(recipe.models)), method="toy_wsum")
    with pytest.raises(RecipeError, match="differ from the resident ones"):
        merger.merge_state_dict(other)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("exc", [Interrupt, KeyboardInterrupt])
def test_interrupted_merge_leaves_nothing(tiny_family, tmp_path, monkeypatch, exc):
    def explode(base, deltas, params, ctx):
        if len(CALLS) >= 3:
            raise exc("stop")
        return _wsum(base, deltas, params, ctx)

    spec = MethodSpec("toy_wsum", "", explode, params=TOY_METHODS["toy_wsum"].params)
    monkeypatch.setitem(registry.METHODS, "toy_wsum", spec)
    with pytest.raises(exc):
        merge_to_disk(_recipe(tiny_family), tmp_path / "out", shard_size="20KB")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_on_the_writer_thread_stops_the_merge_and_leaves_nothing(tiny_family, tmp_path, monkeypatch):
    """Writes run on a helper thread behind the merge: a disk error there still surfaces as the merge's
    error, and the half-written output is removed."""
    from evomerge.io.writer import ShardWriter

    real_write, written = ShardWriter._write_bytes, []  # every write (whole tensors and parts) ends here

    def failing_write(self, name, planned, tensor):
        if len(written) == 4:
            raise OSError(28, "No space left on device")
        written.append(name)
        real_write(self, name, planned, tensor)

    monkeypatch.setattr(ShardWriter, "_write_bytes", failing_write)
    with pytest.raises(CheckpointError, match="out: could not write the output: No space left"):
        merge_to_disk(_recipe(tiny_family), tmp_path / "out", shard_size="20KB")
    assert len(written) == 4 and list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_family, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(CheckpointError, match="already exists"):
        merge_to_disk(_recipe(tiny_family), out)
    assert (out / "keep").exists()
    merge_to_disk(_recipe(tiny_family), out, overwrite=True)
    assert not (out / "keep").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_merge_without_base_uses_the_weights(tiny_family, tmp_path, monkeypatch):
    models = [str(tiny_family[k]) for k in ("coding", "tool_use")]
    spec = TOY_METHODS["toy_wsum"]
    nobase = MethodSpec("toy_wsum_nobase", "", _wsum, params=spec.params, requires_base=False)
    monkeypatch.setitem(registry.METHODS, "toy_wsum_nobase", nobase)
    recipe = MergeRecipe(models=models, method="toy_wsum_nobase", parameters={"weight": [0.5, 0.5]})
    merge_to_disk(recipe, tmp_path / "out")
    merged = _load_dir(tmp_path / "out")
    a, b = (load_file(Path(m) / "model.safetensors") for m in models)
    for name in a:
        torch.testing.assert_close(merged[name], 0.5 * a[name] + 0.5 * b[name])


@pytest.mark.cuda
def test_cuda_equals_cpu(tiny_family_llama, tmp_path):
    recipe = _recipe(tiny_family_llama, parameters={"weight": [0.5, 0.5, 0.5]})
    merge_to_disk(recipe, tmp_path / "cpu", device="cpu")
    merge_to_disk(recipe, tmp_path / "cuda", device="cuda")
    cpu, cuda = _load_dir(tmp_path / "cpu"), _load_dir(tmp_path / "cuda")
    for name in cpu:
        torch.testing.assert_close(cuda[name], cpu[name], rtol=0, atol=0)
    resident = ResidentMerger(recipe.base, recipe.models, device="cuda").merge_state_dict(recipe)
    for name in cpu:
        assert resident[name].device.type == "cuda"
        torch.testing.assert_close(resident[name].cpu(), cpu[name], rtol=0, atol=0)


def test_a_method_returning_its_operand_is_not_corrupted_by_buffer_reuse(tiny_family, monkeypatch):
    # operands live in buffers reused from tensor to tensor; a result aliasing one must be copied out
    monkeypatch.setitem(registry.METHODS, "toy_base", MethodSpec("toy_base", "returns the base itself",
                                                                 lambda base, deltas, params, ctx: base))
    recipe = _recipe(tiny_family, method="toy_base", dtype="float32")
    state = ResidentMerger(recipe.base, recipe.models).merge_state_dict(recipe)
    base = load_file(tiny_family["base"] / "model.safetensors")
    assert all(torch.equal(state[k], base[k]) for k in base)
