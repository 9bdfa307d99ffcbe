"""ResidentMerger's placements (device, host_mapped, compact) and row-blocked merges (evomerge/row_blocks.py):
every placement and every block size gives `merge_to_disk`'s tensors bit for bit, for every registered method."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.engine import merge_to_disk
from evomerge.errors import CheckpointError
from evomerge.methods.registry import METHODS, get_method
from evomerge.recipe import MergeRecipe
from evomerge.input_stores import CompactDelta, pack_bits, unpack_bits
from evomerge.resident import PLACEMENTS, ResidentMerger
from evomerge.row_blocks import row_blocks, rule_row_blockable

# rows x cols chosen so small workspaces split them into ragged blocks; a 1-D tensor; an integer buffer
SHAPES = {"embed.weight": (103, 24), "mlp.weight": (40, 56), "norm.weight": (24,), "big.weight": (301, 8)}
N_AGENTS = 3


def _write(path, tensors):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "toy", "architectures": ["ToyForCausalLM"]}))
    save_file(tensors, str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A bf16 base and three agents with sparse RL-like deltas (a few bf16 steps on 5-50 % of entries,
    partly shared), a signed zero flipped, and an integer buffer."""
    root = tmp_path_factory.mktemp("placement")
    gen = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=gen).to(torch.bfloat16) for n, s in SHAPES.items()}
    base["mlp.weight"].view(-1)[:7] = 0.0
    base["buffer"] = torch.arange(10, dtype=torch.int64)
    _write(root / "base", base)
    models = []
    for t, density in enumerate([0.05, 0.2, 0.5]):
        agent = {}
        for n, b in base.items():
            if not b.is_floating_point():
                agent[n] = b.clone()
                continue
            changed = torch.rand(b.shape, generator=gen) < density
            step = torch.randn(b.shape, generator=gen) * 0.02
            agent[n] = torch.where(changed, b.float() + step, b.float()).to(torch.bfloat16)
        agent["mlp.weight"].view(-1)[t] = -0.0  # a signed zero: bits differ, value equal
        _write(root / f"agent{t}", agent)
        models.append(str(root / f"agent{t}"))
    return {"base": str(root / "base"), "models": models}


# each method with its defaults, plus parameters that make the pruning family element-wise (density 1),
# that prune (row-blocked with whole-tensor statistics: magnitude ranks, DARE's index-keyed draws) and
# that exercise its other branches (no base for linear, l1 rescale, tensor-scope RAM+)
CASES = [(m, {}) for m in sorted(METHODS)] + [
    ("ties", {"density": 1.0}), ("ties", {"density": 0.3}), ("dare_ties", {"density": 1.0}),
    ("ties", {"density": [0.02, 0.3, 0.7], "weight": [1.0, -0.5, 0.8]}), ("ties", {"density": 0.3, "rescale": True}),
    ("dare_ties", {"density": 0.4}), ("dare_linear", {"density": [0.3, 0.6, 0.9], "rescale": False}),
    ("breadcrumbs", {"density": 0.4, "gamma": 0.05}), ("breadcrumbs_ties", {"density": 0.3, "gamma": 0.3}),
    ("breadcrumbs", {"density": 0.9, "gamma": 0.2}),
    ("dare_linear", {"density": 0.4, "rescale_mode": "l1"}), ("breadcrumbs_ties", {"density": 1.0}),
    ("task_arithmetic", {"weight": [0.7, -0.2, 0.4], "normalize": True, "lambda": 1.3}),
    ("ram_plus", {"epsilon": 0.01, "r": 0.5}), ("ram_plus", {"rho_scope": "tensor"}),
    ("ram_plus_soft", {"epsilon": 0.005}), ("linear", {"weight": [0.2, 0.3, 0.5]}),
]


def _recipe(family, method, params, dtype="float32"):
    n = min(get_method(method).max_models or N_AGENTS, N_AGENTS)  # slerp takes two
    return MergeRecipe.from_dict({
        "method": method, "base": family["base"], "models": family["models"][:n],
        "parameters": params, "dtype": dtype, "seed": 7,
    })


def _disk(recipe, tmp_path):
    out = tmp_path / "disk"
    merge_to_disk(recipe, out, overwrite=True)
    return load_file(str(out / "model.safetensors"))


def _assert_same(state, disk, what):
    assert state.keys() == disk.keys(), what
    for name in disk:
        assert state[name].dtype == disk[name].dtype, (what, name)
        assert torch.equal(_bits(state[name]), _bits(disk[name])), (what, name)


def _bits(t):
    """Bit for bit: torch.equal treats -0.0 == 0.0 and NaN != NaN, the integer view does not."""
    t = t.contiguous()
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()]) if t.is_floating_point() else t


# workspaces: 1 row per block (the smallest), ragged blocks (4 operands x 4 B x 24 entries x 5 rows for the
# 103-row embedding: 21 blocks, the last of 3 rows), and None (whole tensors, today's path)
WORKSPACES = [1, 4 * 4 * 24 * 5, None]


def test_row_blocks_cover_every_row_and_end_ragged():
    blocks = row_blocks((103, 24), 4, 4 * 4 * 24 * 5)
    assert blocks[0] == (0, 5) and blocks[-1] == (100, 103) and len(blocks) == 21
    assert [a for a, _ in blocks[1:]] == [b for _, b in blocks[:-1]]
    assert row_blocks((103, 24), 4, 4 * 4 * 24 * 103) is None  # fits: whole
    assert row_blocks((24,), 4, 16) == [(0, 1)] + [(i, i + 1) for i in range(1, 24)]  # 1-D: rows of one entry
    assert row_blocks((1, 5000), 4, 16) is None  # one row cannot be split


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{'-'.join(map(str, p.values())) or 'defaults'}"
                                                      for m, p in CASES])
def test_every_method_and_placement_equals_disk_merge(family, tmp_path, method, params):
    recipe = _recipe(family, method, params)
    disk = _disk(recipe, tmp_path)
    blockable = rule_row_blockable(recipe.rule_for("embed.weight"))
    for placement in PLACEMENTS:
        for workspace in WORKSPACES:
            merger = ResidentMerger(recipe.base, recipe.models, device="cpu", placement=placement,
                                    workspace_bytes=workspace)
            for _ in range(2):  # a merge modifies nothing resident
                _assert_same(merger.merge_state_dict(recipe), disk, (placement, workspace))
            if workspace is not None and blockable:  # really merged in blocks: the workspace stayed bounded
                one_row = len(recipe.models) + 1 if recipe.base else len(recipe.models)
                bound = max(workspace, one_row * 4 * 56)  # a block has at least one row (mlp: 56 entries)
                assert merger.memory_bytes()["workspace"] <= bound, (placement, workspace)
    bf16 = _recipe(family, method, params, dtype="bfloat16")
    merger = ResidentMerger(bf16.base, bf16.models, device="cpu", placement="compact", workspace_bytes=WORKSPACES[1])
    _assert_same(merger.merge_state_dict(bf16), _disk(bf16, tmp_path), "bf16 output")


def test_blockable_rules_keep_the_workspace_bounded(family):
    recipe = _recipe(family, "ram_plus", {"epsilon": 0.01})
    bound = 4 * 4 * 24 * 5
    merger = ResidentMerger(recipe.base, recipe.models, device="cpu", placement="host_mapped", workspace_bytes=bound)
    merger.merge_state_dict(recipe)
    assert merger.memory_bytes()["workspace"] <= bound
    assert merger.overlap_cache.passes == 1  # RAM+'s global counts, gathered over the blocks
    # TIES' top-k and DARE are blocked (whole-tensor statistics gathered over the blocks first)
    for method in ("ties", "breadcrumbs_ties", "dare_ties"):
        rule = _recipe(family, method, {"density": 0.3})
        assert rule_row_blockable(rule.rule_for("embed.weight")), method
        merger.merge_state_dict(rule)
        assert merger.memory_bytes()["workspace"] <= bound, method
    # a rule that needs the whole tensor (an L1 rescale: a float sum over the tensor) grows the workspace to
    # (agents + 1) x that tensor
    l1 = _recipe(family, "ties", {"density": 0.3, "rescale": True})
    assert not rule_row_blockable(l1.rule_for("embed.weight"))
    assert rule_row_blockable(_recipe(family, "ties", {"density": 1.0, "rescale": True}).rule_for("embed.weight"))
    merger.merge_state_dict(l1)
    assert merger.memory_bytes()["workspace"] == 4 * 4 * 103 * 24  # the embedding, the largest


def test_overlap_counts_over_blocks_equal_whole_tensor_counts(family):
    recipe = _recipe(family, "ram_plus", {"epsilon": 0.01})
    whole = ResidentMerger(recipe.base, recipe.models, device="cpu", workspace_bytes=None)
    blocked = ResidentMerger(recipe.base, recipe.models, device="cpu", workspace_bytes=1)
    whole.merge_state_dict(recipe), blocked.merge_state_dict(recipe)
    (a,), (b,) = whole.overlap_cache._entries.values(), blocked.overlap_cache._entries.values()
    assert a == b and a.total == sum(torch.Size(s).numel() for s in SHAPES.values())


def test_merge_into_a_module_in_blocks(family, tmp_path):
    recipe = _recipe(family, "task_arithmetic", {"weight": [0.5, 0.3, 0.2]})
    disk = _disk(recipe, tmp_path)
    module = torch.nn.Module()
    for name, value in disk.items():
        module.register_buffer(name.replace(".", "_"), torch.zeros_like(value))
    merger = ResidentMerger(recipe.base, recipe.models, device="cpu", placement="compact", workspace_bytes=1)
    merger.merge_into(recipe, module, name_map=lambda n: n.replace(".", "_"))
    _assert_same({n: getattr(module, n.replace(".", "_")) for n in disk}, disk, "merge_into")


def test_compact_delta_rebuilds_the_weights_bit_for_bit():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(3 * CompactDelta.CHUNK + 37, generator=gen).to(torch.bfloat16)
    base[:5] = 0.0
    weights = base.clone()
    changed = torch.rand(base.shape, generator=gen) < 0.3
    weights[changed] = (base[changed].float() + 0.5).to(torch.bfloat16)
    weights[1] = -0.0  # same value as the base's 0.0, other bits: must be kept
    delta = CompactDelta(base, weights)
    assert delta.values.numel() == int(changed.sum()) + 1
    # spans starting and ending off byte and chunk boundaries, and the whole tensor
    for a, b in [(0, base.numel()), (3, 11), (4095, 8200), (CompactDelta.CHUNK, 2 * CompactDelta.CHUNK + 1),
                 (base.numel() - 9, base.numel()), (17, 17)]:
        row = base[a:b].float()
        delta.write_over(row, a, b)
        assert torch.equal(row.view(torch.int32), weights[a:b].float().view(torch.int32)), (a, b)
    dense = base.numel() * 2
    assert delta.nbytes() < 0.75 * dense  # 30 % changed: 1/8 + 0.6 bytes per entry + counts


def test_bit_packing_round_trips():
    mask = torch.rand(1000) < 0.4
    assert torch.equal(unpack_bits(pack_bits(mask))[:1000], mask)


def test_compact_and_mapped_memory_accounting(family):
    dense = ResidentMerger(family["base"], family["models"], device="cpu", workspace_bytes=None)
    compact = ResidentMerger(family["base"], family["models"], device="cpu", placement="compact")
    mapped = ResidentMerger(family["base"], family["models"], device="cpu", placement="host_mapped")
    numel = sum(torch.Size(s).numel() for s in SHAPES.values())
    assert dense.resident_bytes() == 4 * numel * 2 + 80  # bf16 base + 3 agents, and the int64 buffer
    assert compact.resident_bytes() < dense.resident_bytes()
    assert mapped.resident_bytes() == 80 and mapped.memory_bytes()["mapped"] >= 4 * numel * 2
    assert dense.memory_bytes()["workspace"] == 4 * 4 * 103 * 24  # (agents + 1) x the largest tensor


def test_host_mapped_refuses_nan_naming_the_file(family, tmp_path):
    tensors = load_file(f"{family['models'][0]}/model.safetensors")
    tensors["mlp.weight"][3, 4] = float("nan")
    _write(tmp_path / "broken", tensors)
    with pytest.raises(CheckpointError, match=r"broken/model.safetensors: tensor 'mlp.weight' has 1 NaN"):
        ResidentMerger(family["base"], [str(tmp_path / "broken")], device="cpu", placement="host_mapped")


def test_settings_are_checked(family):
    with pytest.raises(ValueError, match="placement must be one of"):
        ResidentMerger(family["base"], family["models"], device="cpu", placement="gpu")
    with pytest.raises(ValueError, match="keep='float32'"):
        ResidentMerger(family["base"], family["models"], device="cpu", placement="compact", keep="float32")
    with pytest.raises(ValueError, match="workspace_bytes"):
        ResidentMerger(family["base"], family["models"], device="cpu", workspace_bytes=0)


def test_a_method_falsely_declared_blockable_is_caught(family, tmp_path, monkeypatch):
    """The equality test can fail: a method using a whole-tensor statistic (here the mean) that claims to be
    row-blockable gives other tensors when blocked."""
    from dataclasses import replace

    from evomerge.methods import registry

    def centred(base, deltas, params, ctx):
        return base + sum(d - d.mean() for d in deltas)

    spec = replace(get_method("task_arithmetic"), name="toy_centred", merge=centred, row_blockable=lambda p: True)
    monkeypatch.setitem(registry.METHODS, "toy_centred", spec)
    recipe = _recipe(family, "toy_centred", {})
    disk = _disk(recipe, tmp_path)
    with pytest.raises(AssertionError):
        _assert_same(ResidentMerger(recipe.base, recipe.models, device="cpu", workspace_bytes=1)
                     .merge_state_dict(recipe), disk, "blocked")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_streamed_to_gpu_equals_cpu_merge(family):
    recipe = _recipe(family, "ram_plus", {"epsilon": 0.01})
    cpu = ResidentMerger(recipe.base, recipe.models, device="cpu").merge_state_dict(recipe)
    for placement in PLACEMENTS:
        gpu = ResidentMerger(recipe.base, recipe.models, device="cuda", placement=placement, workspace_bytes=4096)
        for name, value in gpu.merge(recipe):  # the iterator vLLM's load_weights takes
            assert value.device.type == "cuda"
            assert torch.equal(value.cpu(), cpu[name]), (placement, name)


def test_tensor_scope_counts_are_gathered_over_the_blocks_first(family, tmp_path, monkeypatch):
    """RAM+ rho_scope 'tensor' is merged in blocks with the whole tensor's counts (a first pass); without that
    pass each block would count only its own rows and the tensors would differ."""
    from evomerge import row_blocks

    recipe = _recipe(family, "ram_plus", {"rho_scope": "tensor", "epsilon": 0.01, "r": 0.9})
    assert rule_row_blockable(recipe.rule_for("embed.weight"))
    disk = _disk(recipe, tmp_path)
    merger = ResidentMerger(recipe.base, recipe.models, device="cpu", workspace_bytes=4 * 4 * 24 * 5)
    _assert_same(merger.merge_state_dict(recipe), disk, "two-pass")
    assert merger.memory_bytes()["workspace"] <= 4 * 4 * 24 * 5
    monkeypatch.setattr(row_blocks, "_tensor_overlap", lambda *args: None)
    with pytest.raises(AssertionError):
        _assert_same(merger.merge_state_dict(recipe), disk, "per-block counts")


def test_ties_blocks_need_the_whole_tensor_statistics(family, tmp_path, monkeypatch):
    """TIES in blocks ranks magnitudes over the whole tensor (a first pass); a block offered without those
    statistics is refused (ranking it on its own would keep the top k of every block instead)."""
    from evomerge import row_blocks

    recipe = _recipe(family, "ties", {"density": 0.3})
    disk = _disk(recipe, tmp_path)
    merger = ResidentMerger(recipe.base, recipe.models, device="cpu", workspace_bytes=4 * 4 * 24 * 5)
    _assert_same(merger.merge_state_dict(recipe), disk, "two-pass")

    monkeypatch.setattr(row_blocks, "_block_statistics", lambda *args: None)  # each block ranked alone
    with pytest.raises(ValueError, match="needs its whole tensor's statistics"):
        merger.merge_state_dict(recipe)
