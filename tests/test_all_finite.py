"""evomerge.io.reader.all_finite: the fast finiteness test used by checkpoint reads and the vllm swap."""

import pytest
import torch

from evomerge.io.reader import all_finite


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_entry_is_found(dtype, bad):
    x = torch.randn(1000).to(dtype)
    assert all_finite(x)
    x[517] = bad
    assert not all_finite(x)
    strided = x.view(10, 100)[:, ::3]  # not contiguous; holds entry 517 only for some strides
    assert all_finite(strided) == bool(torch.isfinite(strided).all())


def test_finite_values_whose_sum_overflows_are_finite():
    big = torch.full((10,), 3e38, dtype=torch.float32)
    assert not torch.isfinite(big.sum()) and all_finite(big)


def test_empty_and_integer_tensors_are_finite():
    assert all_finite(torch.empty(0)) and all_finite(torch.arange(5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_half_precision_is_checked_chunk_by_chunk_to_the_last_entry(monkeypatch, dtype, value):
    """The bf16/fp16 check runs in chunks through one small buffer (no whole-tensor temporary): a NaN/inf in
    any chunk, the ragged last one included, is found; a finite tensor spanning several chunks passes."""
    import evomerge.io.reader as reader

    monkeypatch.setattr(reader, "FINITE_CHUNK", 7)
    x = torch.linspace(-60000, 60000, 7 * 5 + 3).to(dtype)  # the largest finite fp16 magnitudes, 6 chunks
    assert all_finite(x) and all_finite(x.view(2, 19))
    for index in (0, 6, 7, 20, 36, 37):
        y = x.clone()
        y[index] = value
        assert not all_finite(y), index
