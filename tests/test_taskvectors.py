"""Change masks, overlap counts and the rho / lambda rules (RAM paper Eqs. 1, 2, 6, App. E)."""

from __future__ import annotations

import pytest
import torch

from evomerge.methods.spec import GlobalOverlap
from evomerge.taskvectors import (
    OverlapCounts,
    change_masks,
    change_patterns,
    overlap_counts,
    ram_plus_lambda,
    ram_plus_soft_lambda,
    rho,
    task_vectors,
)

# 3 agents x 6 coordinates; epsilon 0.5. Changed (|x| > 0.5):
#   A: coords 0 1 2        B: coords 1 2        C: coords 2 5
#   c = [1, 2, 3, 0, 0, 1]; coord 3 has sub-epsilon changes only, coord 4 none.
A = [1.0, 2.0, 3.0, 0.2, 0.0, 0.0]
B = [0.0, 4.0, -1.0, 0.5, 0.0, 0.0]
C = [0.0, 0.0, 6.0, -0.4, 0.1, -5.0]


def deltas():
    return [torch.tensor(x) for x in (A, B, C)]


def test_task_vectors_are_float32_differences():
    base = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    (tau,) = task_vectors(base, [torch.tensor([1.5, 1.0], dtype=torch.bfloat16)])
    assert tau.dtype == torch.float32
    assert tau.tolist() == [0.5, -1.0]


def test_change_masks_strict_and_absolute():
    masks = change_masks(deltas(), 0.5)
    assert masks.shape == (3, 6) and masks.dtype == torch.bool
    assert masks.tolist() == [
        [True, True, True, False, False, False],
        [False, True, True, False, False, False],  # 0.5 is not > 0.5
        [False, False, True, False, False, True],  # -5.0 counts: the threshold is on |tau|
    ]


@pytest.mark.parametrize("epsilon", [1e-5, 3e-4, 0.5])
def test_pattern_histogram_agrees_with_masks_around_epsilon(epsilon):
    """The fused counting path (hardshrink) must draw the line exactly where |tau| > epsilon does,
    including float32 values that straddle epsilon."""
    g = torch.Generator().manual_seed(0)
    near = torch.tensor(epsilon, dtype=torch.float32)
    edge = torch.stack([near, torch.nextafter(near, torch.tensor(1.0)), torch.nextafter(near, torch.tensor(0.0))])
    ds = [torch.cat([(torch.rand(5000, generator=g) * 2 - 1) * 2 * epsilon, edge, -edge]) for _ in range(3)]
    masks = change_masks(ds, epsilon)
    codes = (masks.long() * torch.tensor([1, 2, 4])[:, None]).sum(0)
    assert change_patterns(ds, epsilon) == torch.bincount(codes, minlength=8).tolist()


def test_overlap_counts_by_hand():
    counts = overlap_counts(deltas(), 0.5)
    assert counts.total == 6
    assert counts.changed == (3, 2, 2)
    assert counts.unique == (1, 0, 1)
    assert counts.shared == (2, 2, 1)
    # shared_with[t][k]: changes of t that exactly k other agents made too
    assert counts.shared_with == ((1, 1, 1), (0, 1, 1), (1, 0, 1))
    # patterns: {} x2 (coords 3, 4), {A} coord 0, {A,B} coord 1, {C} coord 5, {A,B,C} coord 2
    assert counts.patterns == (2, 1, 0, 1, 1, 0, 0, 1)
    assert counts.density(0) == 0.5
    assert counts.rho(0) == 2.0 and counts.rho(1) is None and counts.rho(2) == 1.0


def test_overlap_counts_shape_free_and_summable():
    two_d = [d.reshape(2, 3) for d in deltas()]
    one = overlap_counts(two_d, 0.5)
    assert one == overlap_counts(deltas(), 0.5)
    total = OverlapCounts.zero(3) + one + one
    assert total.changed == (6, 4, 4) and total.unique == (2, 0, 2) and total.total == 12
    assert total.shared_with == ((2, 2, 2), (0, 2, 2), (2, 0, 2))
    with pytest.raises(ValueError):
        one + overlap_counts(deltas()[:2], 0.5)


def test_overlap_counts_handle_many_agents_and_refuse_too_many():
    g = torch.Generator().manual_seed(1)
    ds = [torch.randn(50, generator=g) for _ in range(10)]  # int16 pattern codes
    counts = overlap_counts(ds, 0.5)
    masks = change_masks(ds, 0.5)
    c = masks.sum(0)
    assert counts.changed == tuple(masks.sum(1).tolist())
    assert counts.unique == tuple((masks & (c == 1)).sum(1).tolist())
    with pytest.raises(ValueError):
        overlap_counts([torch.zeros(2)] * 17, 0.5)


def test_as_global_overlap():
    overlap = overlap_counts(deltas(), 0.5).as_global_overlap(0.5)
    assert overlap == GlobalOverlap(epsilon=0.5, shared=(2, 2, 1), unique=(1, 0, 1), total=6)


def test_rho_eq2_and_no_unique_entries():
    assert rho(6, 3) == 2.0
    assert rho(0, 4) == 0.0
    assert rho(5, 0) is None  # undefined: no unique entries
    assert rho(0, 0) is None
    with pytest.raises(ValueError):
        rho(-1, 2)


def test_ram_plus_lambda_eq6_with_clipping():
    assert ram_plus_lambda(1.0, 0.1, 2.0) == pytest.approx(1.1)
    assert ram_plus_lambda(14.87, 0.1, 2.0) == pytest.approx(1.2)  # clipped at alpha
    assert ram_plus_lambda(1.5, 0.1, 1.0) == pytest.approx(1.1)  # clipped at a smaller alpha
    assert ram_plus_lambda(0.0, 0.1, 2.0) == 1.0
    assert ram_plus_lambda(None, 0.1, 2.0) == 1.0  # no unique entries -> lambda = 1
    assert ram_plus_lambda(3.0, 0.0, 2.0) == 1.0  # r = 0 is RAM


def test_lambdas_of_the_papers_three_agent_merge():
    """The digest's worked example (§1.7): unique shares 6.3 / 40.8 / 47.5 % of each agent's changes."""
    rhos = [rho(937, 63), rho(592, 408), rho(525, 475)]
    assert [round(ram_plus_lambda(r, 0.1, 2.0), 3) for r in rhos] == [1.2, 1.145, 1.111]
    assert [round(ram_plus_soft_lambda(r, 0.1), 3) for r in rhos] == [1.094, 1.059, 1.052]


def test_ram_plus_soft_lambda_app_e():
    assert ram_plus_soft_lambda(1.0, 0.1) == pytest.approx(1.05)
    assert ram_plus_soft_lambda(3.0, 0.2) == pytest.approx(1.15)
    assert ram_plus_soft_lambda(None, 0.1) == 1.0
    assert ram_plus_soft_lambda(float("inf"), 0.1) == pytest.approx(1.1)
