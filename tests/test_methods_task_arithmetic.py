"""Task arithmetic, TIES, DARE and Model Breadcrumbs on hand-built tensors."""

from __future__ import annotations

import pytest
import torch

from evomerge.methods.registry import get_method
from evomerge.methods.sparsify import magnitude_prune, outlier_band_prune, random_keep, random_mask
from evomerge.methods.spec import TensorContext

CTX = TensorContext(name="model.layers.0.self_attn.q_proj.weight", seed=1234)


def merge(method, params, deltas, base=None, ctx=CTX):
    spec = get_method(method)
    base = torch.zeros_like(deltas[0]) if base is None else base
    return spec.merge(base, list(deltas), spec.resolve(params, len(deltas), "test"), ctx)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=torch.float32), rtol=0, atol=1e-6)


# -- task arithmetic ----------------------------------------------------------------------------

BASE3 = torch.tensor([1.0, 2.0, 3.0])
TA_A = torch.tensor([1.0, 0.0, -1.0])
TA_B = torch.tensor([2.0, 2.0, 2.0])


def test_task_arithmetic_weighted_sum():
    # base + 0.5 A + 2 B
    close(merge("task_arithmetic", {"weight": [0.5, 2.0]}, (TA_A, TA_B), BASE3), [5.5, 6.0, 6.5])


def test_task_arithmetic_normalize_and_lambda():
    # (0.5 A + 2 B) / 2.5 = [1.8, 1.6, 1.4]
    close(merge("task_arithmetic", {"weight": [0.5, 2.0], "normalize": True}, (TA_A, TA_B), BASE3), [2.8, 3.6, 4.4])
    # lambda scales the merged task vector: base + 2 (0.5 A + 2 B)
    close(merge("task_arithmetic", {"weight": [0.5, 2.0], "lambda": 2.0}, (TA_A, TA_B), BASE3), [10.0, 10.0, 10.0])


def test_task_arithmetic_zero_weight_sum_is_not_divided():
    # mergekit's rule: a weight sum below 1e-8 leaves the sum undivided instead of blowing up
    close(merge("task_arithmetic", {"weight": [1.0, -1.0], "normalize": True}, (TA_A, TA_B), BASE3), [0.0, 0.0, 0.0])


# -- TIES ---------------------------------------------------------------------------------------

TIES_A = torch.tensor([1.0, -2.0, 3.0, 0.0, 1.0, -1.0])
TIES_B = torch.tensor([2.0, 1.0, -4.0, 0.0, -1.0, 1.0])
TIES_C = torch.tensor([-1.0, 1.0, -1.0, 0.0, 0.0, 0.0])
# column sums [2, 0, -2, 0, 0, 0]: elected signs [+, +, -, +, +, +] (a zero sum elects +)


def test_ties_sign_election_and_disjoint_mean():
    deltas = (TIES_A, TIES_B, TIES_C)
    # agreeing entries: c0 A1 B2; c1 B1 C1; c2 B-4 C-1; c3 none; c4 A1; c5 B1
    close(merge("ties", {"normalize": False}, deltas), [3.0, 2.0, -5.0, 0.0, 1.0, 1.0])
    # disjoint mean: divide by the number (weight) of agreeing models, not by N
    close(merge("ties", {}, deltas), [1.5, 1.0, -2.5, 0.0, 1.0, 1.0])


def test_ties_weights_enter_election_and_divisor():
    # weights [1, 1, 2]: weighted C = [-2, 2, -2, 0, 0, 0]; sums [1, 1, -3, 0, 0, 0]
    # c0: A1 + B2 = 3 over weights 1+1; c1: B1 + C2 = 3 over 1+2; c2: B-4 + C-2 = -6 over 1+2
    out = merge("ties", {"weight": [1.0, 1.0, 2.0]}, (TIES_A, TIES_B, TIES_C))
    close(out, [1.5, 1.0, -2.0, 0.0, 1.0, 1.0])


TEN = torch.tensor([0.1, -0.5, 0.3, 0.9, -0.2, 0.05, 0.7, 0.0, 0.0, 0.4])


def test_ties_trims_to_top_density_magnitudes():
    # density 0.3 of 10 entries -> k = 3: 0.9, 0.7, -0.5 survive
    trimmed = [0.0, -0.5, 0.0, 0.9, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0]
    close(merge("ties", {"density": 0.3}, (TEN,)), trimmed)
    close(merge("ties", {"density": 0.3, "weight": 2.0, "normalize": False}, (TEN,)), [2 * x for x in trimmed])
    # k = max(1, int(density * n)): at least one entry survives
    close(merge("ties", {"density": 0.01}, (TEN,)), [0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def test_ties_rescale_matches_the_l1_norm():
    # sum |TEN| = 3.15, kept 0.9 + 0.7 + 0.5 = 2.1 -> factor 1.5
    close(merge("ties", {"density": 0.3, "rescale": True}, (TEN,)),
          [0.0, -0.75, 0.0, 1.35, 0.0, 0.0, 1.05, 0.0, 0.0, 0.0])


def test_magnitude_prune_keeps_exactly_k_without_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    for density in (0.001, 0.1, 0.25, 0.5, 0.999):
        pruned = magnitude_prune(x, density)
        keep = pruned != 0
        assert int(keep.sum()) == max(1, int(density * 1000))
        assert torch.equal(pruned[keep], x[keep])
        assert x[keep].abs().min() > x[~keep].abs().max()
    assert magnitude_prune(x, 1.0) is None


def test_counts_are_mergekits_int_of_the_float_product():
    """k = int(density * n) in float arithmetic, as mergekit 0.1.5: 0.29 * 100 = 28.999999999999996 keeps 28."""
    x = torch.randn(100, generator=torch.Generator().manual_seed(3))
    assert int(magnitude_prune(x, 0.29).count_nonzero()) == 28
    assert int(outlier_band_prune(x, 0.29, 0.0).count_nonzero()) == 28
    assert int(magnitude_prune(x, 0.57).count_nonzero()) == 56  # 56.99999999999999
    assert int(magnitude_prune(x, 0.001).count_nonzero()) == 1  # TIES keeps at least one entry
    assert int(outlier_band_prune(x, 0.001, 0.0).count_nonzero()) == 0  # Breadcrumbs does not


def test_magnitude_prune_keeps_the_lowest_indices_among_ties():
    x = torch.tensor([3.0, -2.0, 2.0, 1.0, -2.0])
    assert magnitude_prune(x, 0.4).tolist() == [3.0, -2.0, 0.0, 0.0, 0.0]  # k = 2: only the first |2|
    assert magnitude_prune(x, 0.6).tolist() == [3.0, -2.0, 2.0, 0.0, 0.0]  # k = 3
    assert magnitude_prune(x.reshape(1, 5), 0.4).tolist() == [[3.0, -2.0, 0.0, 0.0, 0.0]]


def test_magnitude_prune_of_a_sparse_vector_keeps_its_non_zeros():
    x = torch.tensor([0.0, 0.5, 0.0, 0.0, -0.25, 0.0])
    pruned = magnitude_prune(x, 0.5)  # k = 3 > 2 non-zeros: the threshold is 0
    assert pruned.tolist() == x.tolist() and pruned.data_ptr() != x.data_ptr()


# -- Model Breadcrumbs --------------------------------------------------------------------------

CRUMBS = torch.tensor([0.1, -0.5, 0.3, 0.9, -0.2, 0.05, 0.7, 0.15, 0.25, 0.4])
# ascending |x|: 0.05 0.1 0.15 0.2 0.25 0.3 0.4 0.5 0.7 0.9


def test_breadcrumbs_drop_outliers_and_smallest():
    # density 0.5 -> keep 5; gamma 0.1 -> 1 outlier (0.9); bottom = 10 - 5 - 1 = 4 smallest dropped
    out = merge("breadcrumbs", {"density": 0.5, "gamma": 0.1}, (CRUMBS,))
    close(out, [0.0, -0.5, 0.3, 0.0, 0.0, 0.0, 0.7, 0.0, 0.25, 0.4])


def test_breadcrumbs_keep_density_when_density_plus_gamma_exceeds_one():
    # density 0.8 keeps 8, gamma 0.3 would drop 3 outliers: only 2 can go (mergekit's rule)
    out = merge("breadcrumbs", {"density": 0.8, "gamma": 0.3}, (CRUMBS,))
    close(out, torch.where(CRUMBS.abs() < 0.6, CRUMBS, 0))
    # density 1 keeps everything, gamma is ignored (as mergekit)
    close(merge("breadcrumbs", {"density": 1.0, "gamma": 0.3}, (CRUMBS,)), CRUMBS)


def test_outlier_band_prune_keeps_the_rank_band():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1000, generator=g)
    pruned = outlier_band_prune(x, 0.6, 0.05)
    ranks = x.abs().argsort().argsort()  # 0 = smallest
    band = (ranks >= 1000 - 600 - 50) & (ranks < 1000 - 50)
    assert torch.equal(pruned, torch.where(band, x, 0))


def test_outlier_band_prune_breaks_ties_as_a_stable_ascending_sort():
    # ascending stable order of |x|: 1(i3) 2(i1) 2(i2) 2(i4) 3(i0) 3(i5); n = 6, keep int(0.5 * 6) = 3,
    # int(0.2 * 6) = 1 outlier, 2 at the bottom: positions [2, 5) = i2, i4, i0 (the first 3 is kept)
    x = torch.tensor([3.0, -2.0, 2.0, 1.0, -2.0, -3.0])
    assert outlier_band_prune(x, 0.5, 0.2).tolist() == [3.0, 0.0, 2.0, 0.0, -2.0, 0.0]
    # no outlier (gamma 0): positions [3, 6) = i4, i0, i5
    assert outlier_band_prune(x, 0.5, 0.0).tolist() == [3.0, 0.0, 0.0, 0.0, -2.0, -3.0]
    # no bottom (density + gamma = 1): positions [0, 4) = i3, i1, i2, i4
    assert outlier_band_prune(x, 4 / 6, 2 / 6).tolist() == [0.0, -2.0, 2.0, 1.0, -2.0, 0.0]


def test_breadcrumbs_ties_elects_signs_after_pruning():
    a = torch.tensor([1.0, -3.0, 0.2, 10.0])
    b = torch.tensor([-2.0, 1.0, 0.3, 0.1])
    # density 0.5, gamma 0.25 -> each keeps 2 entries after dropping its largest: a keeps 1, -3; b keeps 1, 0.3
    # sums [1, -2, 0.3, 0]: c0 + -> a 1; c1 - -> a -3; c2 + -> b 0.3
    out = merge("breadcrumbs_ties", {"density": 0.5, "gamma": 0.25}, (a, b))
    close(out, [1.0, -3.0, 0.3, 0.0])


# -- DARE ---------------------------------------------------------------------------------------


def big_delta(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g)


def test_dare_keep_rate_and_inverse_density_rescale():
    delta = big_delta()
    out = merge("dare_linear", {"density": 0.3}, (delta,))
    kept = out != 0
    rate = kept.float().mean().item()
    sigma = (0.3 * 0.7 / delta.numel()) ** 0.5
    assert abs(rate - 0.3) < 5 * sigma
    torch.testing.assert_close(out[kept], delta[kept] / 0.3, rtol=1e-6, atol=0)
    # without rescale the kept entries are the task vector's own
    plain = merge("dare_linear", {"density": 0.3, "rescale": False}, (delta,))
    assert torch.equal(plain != 0, kept) and torch.equal(plain[kept], delta[kept])


def test_dare_l1_rescale_mode_keeps_the_l1_norm():
    delta = big_delta()
    out = merge("dare_linear", {"density": 0.3, "rescale_mode": "l1"}, (delta,))
    torch.testing.assert_close(out.abs().sum(), delta.abs().sum(), rtol=1e-5, atol=0)


def test_dare_same_seed_same_tensor_other_seed_other_mask():
    delta = big_delta(10_000)
    first = merge("dare_ties", {"density": 0.5}, (delta, delta.flip(0)))
    merge("dare_ties", {"density": 0.5}, (big_delta(10_000, 1),), ctx=TensorContext("other", seed=99))  # in between
    again = merge("dare_ties", {"density": 0.5}, (delta, delta.flip(0)))
    assert torch.equal(first, again)
    other = merge("dare_ties", {"density": 0.5}, (delta, delta.flip(0)), ctx=TensorContext(CTX.name, seed=1235))
    assert not torch.equal(first, other)


def test_dare_models_draw_independent_masks():
    """Model t's mask depends on (seed, t) only: changing another model's density leaves it alone,
    and two models with the same task vector are not dropped in lockstep."""
    delta = big_delta(10_000)
    zero = torch.zeros_like(delta)
    first_only = merge("dare_linear", {"density": [0.5, 0.2], "rescale": False}, (delta, zero))
    first_only_again = merge("dare_linear", {"density": [0.5, 0.9], "rescale": False}, (delta, zero))
    assert torch.equal(first_only, first_only_again)
    second_only = merge("dare_linear", {"density": [0.5, 0.5], "rescale": False}, (zero, delta))
    assert not torch.equal(first_only != 0, second_only != 0)


def test_dare_masks_are_nested_across_densities():
    delta = big_delta(10_000)
    low, high = random_mask(delta, 0.2, seed=5), random_mask(delta, 0.6, seed=5)
    assert torch.equal(low & high, low)


def test_random_keep_is_a_zero_one_mask_like_rand_below_density():
    """On the CPU, entry i of stream s = i // STREAM is kept iff its draw from SFC64(SeedSequence([seed, s]))
    is below density: written out here with numpy for a tensor of 2 whole streams and a partial third."""
    import numpy as np

    from evomerge.methods.keep_draws import STREAM

    delta = big_delta(2 * STREAM + 1234).reshape(-1, 2)
    keep = random_keep(delta, 0.35, seed=5)
    assert keep.shape == delta.shape and keep.dtype == torch.float32
    assert set(keep.abs().unique().tolist()) == {0.0, 1.0}
    draws = np.concatenate([np.random.Generator(np.random.SFC64(np.random.SeedSequence([5, s]))).random(
        min(STREAM, delta.numel() - s * STREAM), dtype=np.float32) for s in range(3)])
    assert torch.equal(keep.reshape(-1) > 0, torch.from_numpy(draws < np.float32(0.35)))
    assert random_keep(delta, 1.0, seed=5) is None


def test_random_keep_golden_values():
    """Pinned masks: a numpy that drew other SFC64 streams or mapped them to floats differently would
    silently change every DARE merge (and the evaluation cache would not know): this fails instead."""
    from evomerge.methods.keep_draws import STREAM

    keep = random_keep(torch.ones(2 * STREAM), 0.5, seed=12345)
    bits = lambda t: "".join(str(int(v)) for v in t.tolist())  # noqa: E731
    assert bits(keep[:32]) == "01010100100000111111001001001001"
    assert bits(keep[STREAM:STREAM + 32]) == "00001110101011011001100111010101"
    assert int(keep.sum()) == 261715


def test_random_keep_does_not_depend_on_the_thread_count():
    from evomerge.methods.keep_draws import STREAM

    delta = big_delta(3 * STREAM + 7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = random_keep(delta, 0.6, seed=123456789)
        torch.set_num_threads(3)
        three = random_keep(delta, 0.6, seed=123456789)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    assert random_keep(torch.zeros(0), 0.5, seed=1).shape == (0,)
    assert random_keep(torch.tensor(2.0), 0.5, seed=1).shape == ()


def test_dare_at_density_one_is_task_arithmetic_and_ties():
    deltas = (TIES_A, TIES_B, TIES_C)
    close(merge("dare_linear", {"weight": [0.5, 1.0, 2.0]}, deltas),
          merge("task_arithmetic", {"weight": [0.5, 1.0, 2.0]}, deltas))
    close(merge("dare_ties", {"normalize": True}, deltas), merge("ties", {}, deltas))


def test_dare_ties_elects_signs_over_the_kept_entries():
    delta = big_delta(50_000)
    out = merge("dare_ties", {"density": 0.5, "rescale": False}, (delta, -delta))
    # per entry: both kept -> sum 0 elects +, the positive one wins; one kept -> that one; none -> 0
    keep_a = random_mask(delta, 0.5, seed=_seed(0))
    keep_b = random_mask(delta, 0.5, seed=_seed(1))
    pos_a, pos_b = keep_a & (delta > 0), keep_b & (-delta > 0)
    neg_a, neg_b = keep_a & (delta < 0), keep_b & (-delta < 0)
    elected_positive = (delta * keep_a - delta * keep_b) >= 0
    want = torch.where(elected_positive, delta * pos_a - delta * pos_b, delta * neg_a - delta * neg_b)
    close(out, want)


def _seed(t):
    from evomerge.methods.sparsify import model_seed

    return model_seed(CTX.seed, t)


# -- exact counts and the tie rule of magnitude pruning ----------------------------------------------


def stable_top(x: torch.Tensor, k: int) -> torch.Tensor:
    """mergekit 0.1.5's `magnitude` with a stable argsort: x on the first k of a stable descending sort."""
    flat = x.reshape(-1)
    keep = torch.zeros_like(flat)
    keep[torch.argsort(flat.abs(), descending=True, stable=True)[:k]] = 1
    return (flat * keep).view_as(x)


def stable_band(x: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """mergekit 0.1.5's `magnitude_outliers` with a stable sort."""
    flat = x.reshape(-1)
    n = flat.numel()
    n_keep = int(density * n)
    bottom = max(0, n - n_keep - int(gamma * n))
    keep = torch.zeros_like(flat)
    keep[torch.sort(flat.abs(), stable=True).indices[bottom:bottom + n_keep]] = 1
    return (flat * keep).view_as(x)


def bf16_task_vector(shape, generator, levels=None, zero_fraction=0.0):
    """agent - base of bf16 weights, in float32 as the engine computes it: quantised, so ties are common.
    `levels`: draw from that many magnitudes only (massive ties)."""
    base = (torch.randn(shape, generator=generator) * 0.05).to(torch.bfloat16)
    if levels is None:
        step = torch.randn(shape, generator=generator) * 0.01
    else:  # +-1..levels steps of 0.004
        step = torch.randint(1, levels + 1, shape, generator=generator) * 0.004
        step *= torch.randint(0, 2, shape, generator=generator) * 2 - 1
    agent = (base.float() + step).to(torch.bfloat16)
    unchanged = torch.rand(shape, generator=generator) < zero_fraction
    agent[unchanged] = base[unchanged]
    return agent.float() - base.float()


# shapes on both sides of rank_cuts.SMALL (the radix selection's threshold)
BF16_SHAPES = ((24, 40), (300, 256), (1000,))


def test_magnitude_prune_keeps_exactly_k_on_bf16_task_vectors():
    g = torch.Generator().manual_seed(5)
    for shape in BF16_SHAPES:
        for levels in (None, 3, 40):
            delta = bf16_task_vector(shape, g, levels)
            n = delta.numel()
            assert delta.count_nonzero() > 0.9 * n
            magnitude = delta.abs().reshape(-1)
            for density in (0.001, 0.2, 0.5, 0.85):
                k = max(1, int(density * n))
                pruned = magnitude_prune(delta, density)
                assert int(pruned.count_nonzero()) == k, (shape, levels, density)
                assert torch.equal(pruned, stable_top(delta, k)), (shape, levels, density)
                # the bug this guards against: the k-th magnitude is tied, so "keep every |x| >= it" keeps more
                if levels == 3 and density == 0.2:
                    threshold = torch.kthvalue(magnitude, n - k + 1).values
                    assert int((magnitude >= threshold).sum()) > 1.5 * k


def test_outlier_band_prune_keeps_exactly_its_count_on_bf16_task_vectors():
    g = torch.Generator().manual_seed(6)
    for shape in BF16_SHAPES:
        for levels in (None, 3, 40):
            delta = bf16_task_vector(shape, g, levels)
            n = delta.numel()
            for density, gamma in ((0.2, 0.01), (0.5, 0.1), (0.6, 0.0), (0.8, 0.3), (0.9, 0.1)):
                pruned = outlier_band_prune(delta, density, gamma)
                expected = stable_band(delta, density, gamma)
                assert int(pruned.count_nonzero()) == int(expected.count_nonzero()), (shape, levels, density, gamma)
                assert torch.equal(pruned, expected), (shape, levels, density, gamma)
                if delta.count_nonzero() == n:
                    assert int(pruned.count_nonzero()) == int(density * n)


def test_pruning_of_sparse_tied_vectors_follows_the_stable_sort():
    """Most entries zero (a sparse task vector): thresholds on zeros, and on subnormals just above them."""
    g = torch.Generator().manual_seed(7)
    for shape in BF16_SHAPES:
        delta = bf16_task_vector(shape, g, levels=4, zero_fraction=0.7)
        tiny = delta.clone()
        tiny.view(-1)[:200] = torch.tensor([1e-40, -1e-40]).repeat(100)
        for x in (delta, tiny):
            n = x.numel()
            for density in (0.1, 0.3, 0.5, 0.75):
                assert torch.equal(magnitude_prune(x, density), stable_top(x, max(1, int(density * n))))
                for gamma in (0.01, 0.2):
                    assert torch.equal(outlier_band_prune(x, density, gamma), stable_band(x, density, gamma))


def test_pruning_works_in_any_float_dtype_and_layout():
    g = torch.Generator().manual_seed(8)
    delta = bf16_task_vector((300, 256), g, levels=5)
    for x in (delta.to(torch.bfloat16), delta.to(torch.float16), delta.double(), delta.t()):
        n = x.numel()
        assert torch.equal(magnitude_prune(x, 0.3), stable_top(x, int(0.3 * n))), (x.dtype, x.is_contiguous())
        assert torch.equal(outlier_band_prune(x, 0.3, 0.05), stable_band(x, 0.3, 0.05)), x.dtype


def test_pruning_is_the_same_for_every_thread_count():
    g = torch.Generator().manual_seed(9)
    delta = bf16_task_vector((512, 512), g, levels=6)
    threads = torch.get_num_threads()
    try:
        results = []
        for n_threads in (1, 2, 4):
            torch.set_num_threads(n_threads)
            results.append((magnitude_prune(delta, 0.2), outlier_band_prune(delta, 0.3, 0.02)))
    finally:
        torch.set_num_threads(threads)
    for top, band in results[1:]:
        assert torch.equal(top, results[0][0]) and torch.equal(band, results[0][1])


@pytest.mark.cuda
def test_pruning_on_cuda_equals_the_cpu():
    g = torch.Generator().manual_seed(10)
    for shape in BF16_SHAPES:
        delta = bf16_task_vector(shape, g, levels=5)
        on_gpu = delta.cuda()
        for density in (0.2, 0.5):
            assert torch.equal(magnitude_prune(on_gpu, density).cpu(), magnitude_prune(delta, density))
            assert torch.equal(outlier_band_prune(on_gpu, density, 0.05).cpu(), outlier_band_prune(delta, density, 0.05))


def test_ties_merge_of_one_bf16_agent_keeps_exactly_k():
    g = torch.Generator().manual_seed(11)
    delta = bf16_task_vector((300, 256), g, levels=3)
    merged = merge("ties", {"density": 0.2}, (delta,))
    assert int(merged.count_nonzero()) == int(0.2 * delta.numel())
    assert torch.equal(merged, stable_top(delta, int(0.2 * delta.numel())))


def test_committed_zoo_tensors_keep_exactly_k_at_density_0_2():
    """The zoo's bf16 agents: before exact k, TIES kept up to 4x k entries of some tensors (norm weights)."""
    from pathlib import Path

    from safetensors.torch import load_file

    zoo = Path(__file__).resolve().parent.parent / "zoo"
    base = load_file(zoo / "base" / "model.safetensors")
    excess_before = 1.0
    for agent in ("coding", "tool_use", "memory"):
        state = load_file(zoo / agent / "model.safetensors")
        for name, b in base.items():
            delta = state[name].float() - b.float()
            n = delta.numel()
            k = max(1, int(0.2 * n))
            magnitude = delta.abs().reshape(-1)
            threshold = torch.kthvalue(magnitude, n - k + 1).values
            if threshold == 0:  # fewer than k non-zeros: all kept
                assert torch.equal(magnitude_prune(delta, 0.2), delta)
                continue
            excess_before = max(excess_before, int((magnitude >= threshold).sum()) / k)
            pruned = magnitude_prune(delta, 0.2)
            assert int(pruned.count_nonzero()) == k, (agent, name)
            assert torch.equal(pruned, stable_top(delta, k)), (agent, name)
    assert excess_before > 2  # the zoo really has the ties this test is about


def test_rank_cuts_thresholds_equal_kthvalue():
    from evomerge.methods.rank_cuts import RankRequest, rank_cuts
    from evomerge.methods.spec import OneBlock

    g = torch.Generator().manual_seed(4)
    n = 200_000  # above the size where the radix path starts
    dense = torch.randn(n, generator=g).abs()
    sparse = dense * (torch.rand(n, generator=g) < 0.1)  # 90 % exact zeros
    tied = (torch.randint(0, 50, (n,), generator=g) * 0.125).float()  # heavy ties
    tiny = sparse.clone()
    tiny[:100] = torch.tensor(1e-40)  # subnormals just above the zeros
    for values in (dense, sparse, tied, tiny):
        ranks = (1, 2, 77, n // 10, n // 10 + 1, n // 2, n - 3, n)
        for keep_low in (True, False):
            (cuts,) = rank_cuts(OneBlock((values,)), [RankRequest(0, ranks, keep_low)]).values()
            assert [c.threshold for c in cuts] == [torch.kthvalue(values, n - r + 1).values.item() for r in ranks]
            for cut, r in zip(cuts, ranks):
                if cut.threshold > 0:
                    assert torch.equal(cut.positions, torch.nonzero(values == cut.threshold).view(-1))
                    assert cut.tied_total == cut.positions.numel()
                    assert int((values > cut.threshold).sum()) + cut.tied_kept == r
    (cuts,) = rank_cuts(OneBlock((dense.reshape(400, 500),)), [RankRequest(0, (1234,), True)]).values()
    assert cuts[0].threshold == torch.kthvalue(dense, n - 1234 + 1).values.item()