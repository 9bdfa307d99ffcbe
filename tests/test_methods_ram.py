"""RAM, RAM+ and RAM+s on hand-built tensors (RAM paper Eqs. 1, 2, 6, 7 and App. E)."""

from __future__ import annotations

import pytest
import torch

from evomerge.methods.registry import get_method
from evomerge.methods.spec import GlobalOverlap, TensorContext
from evomerge.taskvectors import overlap_counts

EPS = 0.5
BASE = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
# agent A changes coords 0 1 2; B changes 1 2 (no unique change); C changes 2 5.
# coord 3: every change is below epsilon; coord 4: nothing changed.
A = torch.tensor([1.0, 2.0, 3.0, 0.2, 0.0, 0.0])
B = torch.tensor([0.0, 4.0, -1.0, 0.5, 0.0, 0.0])
C = torch.tensor([0.0, 0.0, 6.0, -0.4, 0.1, -5.0])
# per tensor: A shared 2 / unique 1 -> rho 2; B unique 0 -> lambda 1; C shared 1 / unique 1 -> rho 1

CTX = TensorContext(name="model.layers.0.mlp.up_proj.weight", seed=0)


def merge(method, params, deltas=(A, B, C), base=BASE, ctx=CTX):
    spec = get_method(method)
    return spec.merge(base, list(deltas), spec.resolve(params, len(deltas), "test"), ctx)


def expected(unique_a, unique_c):
    # coord 1: mean over the 2 active agents (not over N = 3); coord 2: mean over all 3
    return BASE + torch.tensor([unique_a, (2.0 + 4.0) / 2, (3.0 - 1.0 + 6.0) / 3, 0.0, 0.0, unique_c])


def test_ram_three_regions():
    torch.testing.assert_close(merge("ram", {"epsilon": EPS}), expected(1.0, -5.0), rtol=0, atol=1e-6)


def test_ram_plus_tensor_rho():
    # lambda_A = 1 + 0.1 * clip(2, 0, 2) = 1.2; lambda_C = 1 + 0.1 * 1 = 1.1; B: no unique entries -> 1
    out = merge("ram_plus", {"epsilon": EPS, "rho_scope": "tensor"})
    torch.testing.assert_close(out, expected(1.2, -5.5), rtol=0, atol=1e-6)


def test_ram_plus_alpha_clips_rho():
    out = merge("ram_plus", {"epsilon": EPS, "rho_scope": "tensor", "alpha": 1.5, "r": 0.2})
    # lambda_A = 1 + 0.2 * min(2, 1.5) = 1.3; lambda_C = 1 + 0.2 * 1 = 1.2
    torch.testing.assert_close(out, expected(1.3, -6.0), rtol=0, atol=1e-6)


def test_ram_plus_r_zero_is_ram():
    out = merge("ram_plus", {"epsilon": EPS, "rho_scope": "tensor", "r": 0.0})
    torch.testing.assert_close(out, merge("ram", {"epsilon": EPS}), rtol=0, atol=0)


def test_ram_plus_global_rho_comes_from_the_whole_model():
    # whole-model counts: A shared 10 / unique 1 -> rho 10, clipped to 2 -> 1.2;
    # C shared 1 / unique 4 -> rho 0.25 -> 1.025. Differs from the tensor-local 1.1 for C.
    overlap = GlobalOverlap(epsilon=EPS, shared=(10, 7, 1), unique=(1, 0, 4), total=1000)
    ctx = TensorContext(name=CTX.name, seed=0, global_overlap=overlap)
    out = merge("ram_plus", {"epsilon": EPS}, ctx=ctx)
    torch.testing.assert_close(out, expected(1.2, -5.125), rtol=0, atol=1e-6)
    tensor_local = merge("ram_plus", {"epsilon": EPS, "rho_scope": "tensor"}, ctx=ctx)
    assert tensor_local[5].item() == pytest.approx(60.0 - 5.5)


def test_ram_plus_global_with_counts_of_this_tensor_equals_tensor_scope():
    overlap = overlap_counts([A, B, C], EPS).as_global_overlap(EPS)
    ctx = TensorContext(name=CTX.name, seed=0, global_overlap=overlap)
    torch.testing.assert_close(merge("ram_plus", {"epsilon": EPS}, ctx=ctx),
                               merge("ram_plus", {"epsilon": EPS, "rho_scope": "tensor"}), rtol=0, atol=0)


def test_ram_plus_global_needs_matching_counts():
    with pytest.raises(ValueError, match="global_overlap"):
        merge("ram_plus", {"epsilon": EPS})
    wrong_eps = TensorContext(name="t", seed=0, global_overlap=GlobalOverlap(1e-5, (1, 1, 1), (1, 1, 1), 10))
    with pytest.raises(ValueError, match="epsilon"):
        merge("ram_plus", {"epsilon": EPS}, ctx=wrong_eps)
    wrong_n = TensorContext(name="t", seed=0, global_overlap=GlobalOverlap(EPS, (1, 1), (1, 1), 10))
    with pytest.raises(ValueError, match="agents"):
        merge("ram_plus_soft", {"epsilon": EPS}, ctx=wrong_n)


def test_ram_plus_soft_app_e():
    # lambda_A = 1 + 0.1 * 2/3; lambda_C = 1 + 0.1 * 1/2 = 1.05
    out = merge("ram_plus_soft", {"epsilon": EPS, "rho_scope": "tensor"})
    torch.testing.assert_close(out, expected(1.0 + 0.2 / 3, -5.25), rtol=0, atol=1e-6)


def test_agent_without_unique_entries_gets_lambda_one_everywhere():
    # every change is shared: rho undefined for both agents, nothing is scaled, no division by zero
    d = torch.tensor([1.0, -2.0, 0.0])
    e = torch.tensor([3.0, -4.0, 0.0])
    for method in ("ram_plus", "ram_plus_soft"):
        out = merge(method, {"epsilon": EPS, "rho_scope": "tensor", "r": 1.0}, deltas=(d, e), base=torch.zeros(3))
        assert out.tolist() == [2.0, -3.0, 0.0]


@pytest.mark.parametrize("method", ["ram", "ram_plus", "ram_plus_soft"])
def test_one_agent_is_that_agent_beyond_epsilon_and_base_below(method):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=g)
    delta = torch.randn(40, 30, generator=g) * 1e-5 * 3  # about a third of the entries within epsilon
    params = {"epsilon": 1e-5} if method == "ram" else {"epsilon": 1e-5, "rho_scope": "tensor"}
    out = merge(method, params, deltas=(delta,), base=base)
    beyond = delta.abs() > 1e-5
    assert 0 < int(beyond.sum()) < delta.numel()
    assert torch.equal(out[beyond], (base + delta)[beyond])
    assert torch.equal(out[~beyond], base[~beyond])


@pytest.mark.parametrize("method", ["ram", "ram_plus", "ram_plus_soft"])
def test_identical_agents_merge_to_the_agent_beyond_epsilon(method):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, generator=g)
    delta = torch.randn(64, generator=g) * 1e-3
    params = {"epsilon": 1e-5} if method == "ram" else {"epsilon": 1e-5, "rho_scope": "tensor"}
    out = merge(method, params, deltas=(delta, delta.clone(), delta.clone()), base=base)
    beyond = delta.abs() > 1e-5
    assert not beyond.all()  # some entries stay below epsilon: those keep the base
    torch.testing.assert_close(out, base + torch.where(beyond, delta, 0), rtol=1e-6, atol=1e-7)


def test_selective_merge_handles_more_agents_than_a_byte_counts():
    from evomerge.methods.ram import selective_merge

    n = 300  # counts overflow uint8 beyond 255 agents
    deltas = [torch.tensor([1.0, 0.0])] * n
    assert selective_merge(torch.zeros(2), deltas, 0.5).tolist() == [1.0, 0.0]
