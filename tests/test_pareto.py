import itertools

import numpy as np
import pytest

from evomerge.search.fidelity import FidelityLadder, Scored, could_be_nondominated
from evomerge.search.pareto import dominates, hypervolume, non_dominated_sort, pareto_front


def test_dominance_and_sorting():
    assert dominates([1, 2], [1, 1]) and not dominates([1, 1], [1, 1]) and not dominates([2, 0], [0, 2])
    pts = [[1, 1], [2, 2], [3, 0], [0, 3], [1, 2], [2, 2]]
    fronts = non_dominated_sort(pts)
    assert fronts[0] == [1, 2, 3, 5]  # duplicates of a front point stay on the front
    assert fronts[1] == [4] and fronts[2] == [0]
    assert sorted(itertools.chain(*fronts)) == list(range(len(pts)))
    assert pareto_front([]) == []


def test_hypervolume_exact_small_cases():
    assert hypervolume([[1, 1]], [0, 0]) == pytest.approx(1.0)
    # two overlapping boxes in 2-D: 2*1 + 1*2 - 1*1
    assert hypervolume([[2, 1], [1, 2]], [0, 0]) == pytest.approx(3.0)
    # points not beating the reference everywhere add nothing; dominated points add nothing
    assert hypervolume([[2, 1], [1, 2], [5, -1], [0.5, 0.5]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([], [0, 0, 0]) == 0.0
    # 3-D: unit cubes shifted along each axis, union by inclusion-exclusion
    pts = [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(3 * 2 - 3 * 1 + 1)
    # reference shift
    assert hypervolume([[3, 3]], [1, 2]) == pytest.approx(2.0)


@pytest.mark.parametrize("dims", [3, 4])
def test_hypervolume_matches_monte_carlo(dims):
    rng = np.random.default_rng(dims)
    pts = rng.uniform(0.1, 1.0, size=(12, dims))
    exact = hypervolume(pts, np.zeros(dims))
    samples = rng.uniform(0, 1, size=(200_000, dims))
    covered = np.zeros(len(samples), bool)
    for p in pts:
        covered |= np.all(samples <= p, axis=1)
    assert exact == pytest.approx(covered.mean(), abs=4e-3)


def test_fidelity_promotion_uses_standard_errors():
    peer = Scored((0.8, 0.8), (0.05, 0.05))
    weak = Scored((0.5, 0.5), (0.05, 0.05))
    noisy = Scored((0.5, 0.5), (0.3, 0.3))
    assert not could_be_nondominated(weak, [peer], z=1.0)
    assert could_be_nondominated(noisy, [peer], z=1.0)  # a few more items could still put it on the front
    ladder = FidelityLadder((8, None), z=1.0)
    assert ladder.promote(0, noisy, [peer]) and not ladder.promote(1, noisy, [peer])
    with pytest.raises(ValueError):
        FidelityLadder((None, 8))
