"""CompactDelta.write_over per row block: each block converts only its own changed values (a bounded
temporary, linear work over a tensor), and blocked compact merges equal whole-tensor merges bit for bit
on tensors that span several 4096-entry prefix-count chunks."""

from __future__ import annotations

import pytest
import torch

from evomerge.input_stores import CompactDelta
from evomerge.recipe import MergeRecipe
from evomerge.resident import ResidentMerger

from test_resident_placement import _write


class _ConversionSpy(torch.Tensor):
    """A tensor that records the size of every dtype conversion (`.to`) made of it or of its slices."""

    sizes: list[int] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.to:
            cls.sizes.append(args[0].numel())
        return super().__torch_function__(func, types, args, kwargs or {})


def _delta(numel: int, density: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, CompactDelta]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(numel, generator=gen).to(torch.bfloat16)
    weights = base.clone()
    changed = torch.rand(numel, generator=gen) < density
    weights[changed] = (base[changed].float() * 1.01 + 0.01).to(torch.bfloat16)
    return base, weights, CompactDelta(base, weights)


def test_write_over_converts_only_the_blocks_values():
    base, weights, delta = _delta(5 * CompactDelta.CHUNK + 123, 0.4, 0)
    delta.values = delta.values.as_subclass(_ConversionSpy)
    _ConversionSpy.sizes = []
    block = 1000  # off every chunk and byte boundary
    for a in range(0, base.numel(), block):
        b = min(a + block, base.numel())
        row = base[a:b].float()
        delta.write_over(row, a, b)
        assert torch.equal(row.view(torch.int32), weights[a:b].float().view(torch.int32)), (a, b)
        # the conversion is exactly this block's changed values (before the fix: every value from a on)
        assert _ConversionSpy.sizes[-1] == int(delta.changed(a, b).sum()) <= b - a
    assert sum(_ConversionSpy.sizes) == delta.values.numel()  # each value converted once over the tensor


def test_changed_before_counts_every_prefix():
    _, _, delta = _delta(2 * CompactDelta.CHUNK + 9, 0.3, 1)
    counts = torch.cat([torch.zeros(1, dtype=torch.int64), delta.changed(0, delta.numel).cumsum(0)])
    for i in [0, 1, 7, 8, 4095, 4096, 4097, 8191, 8192, delta.numel - 1, delta.numel]:
        assert delta.changed_before(i) == int(counts[i]), i


@pytest.fixture(scope="module")
def multi_chunk(tmp_path_factory):
    """bf16 base + 3 agents with tensors of several prefix-count chunks (97 x 130 = 12610 entries)."""
    root = tmp_path_factory.mktemp("compact_blocks")
    gen = torch.Generator().manual_seed(3)
    shapes = {"embed.weight": (97, 130), "mlp.weight": (41, 300), "norm.weight": (130,)}
    base = {n: torch.randn(s, generator=gen).to(torch.bfloat16) for n, s in shapes.items()}
    _write(root / "base", base)
    models = []
    for i, density in enumerate([0.03, 0.2, 0.54]):
        agent = {}
        for name, tensor in base.items():
            step = (torch.rand(tensor.shape, generator=gen) < density) * torch.randn(tensor.shape, generator=gen)
            agent[name] = (tensor.float() + 0.02 * step).to(torch.bfloat16)
        _write(root / f"agent{i}", agent)
        models.append(str(root / f"agent{i}"))
    return str(root / "base"), models


@pytest.mark.parametrize("method,params", [("task_arithmetic", {"weight": [0.5, 0.3, 0.2]}),
                                           ("ram_plus", {"rho_scope": "tensor"})])
def test_blocked_compact_merges_equal_whole_merges(multi_chunk, method, params):
    base, models = multi_chunk
    recipe = MergeRecipe.from_dict({"method": method, "base": base, "models": models, "parameters": params,
                                    "dtype": "float32"})
    whole = ResidentMerger(base, models, device="cpu", workspace_bytes=None).merge_state_dict(recipe)
    # 1 row per block, ragged blocks across chunk boundaries (4 operands x 4 B x 130 x 7 rows), whole tensors
    for workspace in [1, 4 * 4 * 130 * 7, 4 * 4 * 300 * 3, None]:
        compact = ResidentMerger(base, models, device="cpu", placement="compact", workspace_bytes=workspace)
        merged = compact.merge_state_dict(recipe)
        assert merged.keys() == whole.keys()
        for name, tensor in whole.items():
            assert torch.equal(merged[name].view(torch.int32), tensor.view(torch.int32)), (name, workspace)
