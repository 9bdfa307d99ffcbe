"""Pruning split into whole-tensor statistics gathered over row blocks + an apply per block
(methods/rank_cuts.py, sparsify's *_statistics, DARE's index-keyed draws): any split of a tensor into row
blocks prunes exactly as the whole tensor, including the tie-breaks by flat index across block borders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evomerge.methods.keep_draws import STREAM, keep_mask
from evomerge.methods.rank_cuts import RankCut, RankRequest, rank_cuts
from evomerge.methods.sparsify import band_statistics, magnitude_statistics, random_keep
from evomerge.methods.spec import OneBlock


def _reader(deltas, rows_per_block):
    """A BlockReader over row blocks of `rows_per_block` rows (a fresh clone per read, as a workspace
    would hand out: the statistics must not keep references to a block)."""
    per_row = deltas[0][0].numel()

    def read():
        for a in range(0, deltas[0].shape[0], rows_per_block):
            yield a * per_row, [d[a:a + rows_per_block].clone() for d in deltas]

    return read


def _quantised(shape, gen, levels, zero_fraction):
    """bf16-like task vectors with massive ties (a few magnitudes), exact zeros and some subnormals."""
    x = torch.randint(1, levels + 1, shape, generator=gen).float() * 0.004
    x *= torch.randint(0, 2, shape, generator=gen) * 2 - 1
    x[torch.rand(shape, generator=gen) < zero_fraction] = 0.0
    x.view(-1)[::97] = 1e-40  # subnormal magnitudes: the bucket of the zeros
    return x


def _blocked(stats_fn, deltas, rows_per_block):
    read = _reader(deltas, rows_per_block)
    stats = stats_fn(read)
    out = [torch.cat([s.apply(d[t], offset) for offset, d in read()]) if s is not None else None
           for t, s in enumerate(stats)]
    return out


@pytest.mark.parametrize("shape", [(103, 24), (700, 130)])  # below and above rank_cuts.SMALL entries
def test_magnitude_and_band_statistics_over_blocks_equal_the_whole_tensor(shape):
    gen = torch.Generator().manual_seed(3)
    deltas = [_quantised(shape, gen, levels, zeros) for levels, zeros in ((3, 0.1), (40, 0.6), (2, 0.97))]
    n = deltas[0].numel()
    densities = (0.05, 0.3, 0.5)
    whole_top = magnitude_statistics(OneBlock(deltas), n, densities)
    whole_band = band_statistics(OneBlock(deltas), n, densities, (0.01, 0.2, 0.6))
    for rows in (1, 5, 17, shape[0] - 1):
        top = _blocked(lambda r: magnitude_statistics(r, n, densities), deltas, rows)
        band = _blocked(lambda r: band_statistics(r, n, densities, (0.01, 0.2, 0.6)), deltas, rows)
        for t, d in enumerate(deltas):
            assert torch.equal(top[t], whole_top[t].apply(d)), (rows, t)
            assert torch.equal(band[t], whole_band[t].apply(d)), (rows, t)
    # and the whole tensor keeps exactly the entries a stable sort keeps (the rule of sparsify's docstring)
    flat = deltas[0].reshape(-1)
    k = max(1, int(0.05 * n))
    keep = torch.zeros_like(flat)
    keep[torch.argsort(flat.abs(), descending=True, stable=True)[:k]] = 1
    assert torch.equal(whole_top[0].apply(deltas[0]).reshape(-1), flat * keep)


def test_ties_across_a_block_border_are_broken_by_flat_index():
    # 6 entries tied at |2|, 3 in each block of one row; keep 4 of them (plus the 5): the lowest indices
    x = torch.tensor([[2.0, -2.0, 5.0, 2.0], [2.0, 0.0, -2.0, 2.0]])
    (cut,) = rank_cuts(_reader([x], 1), [RankRequest(0, (5,), keep_low=True)])[0]
    assert cut.tied_total == 6 and cut.tied_kept == 4 and cut.tied_before == (0, 3, 6)
    blocks = [cut.apply(x[0:1], 0), cut.apply(x[1:2], 4)]
    assert torch.cat(blocks).tolist() == [[2.0, -2.0, 5.0, 2.0], [2.0, 0.0, 0.0, 0.0]]
    (high,) = rank_cuts(_reader([x], 1), [RankRequest(0, (5,), keep_low=False)])[0]
    assert torch.cat([high.apply(x[0:1], 0), high.apply(x[1:2], 4)]).tolist() == [
        [0.0, 0.0, 5.0, 2.0], [2.0, 0.0, -2.0, 2.0]]
    with pytest.raises(ValueError, match="offset 3 is not one of the blocks"):
        cut.apply(x[0:1], 3)


def test_a_cut_of_zeros_keeps_every_non_zero():
    x = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    (cut,) = rank_cuts(_reader([x], 1), [RankRequest(0, (3,), keep_low=True)])[0]
    assert isinstance(cut, RankCut) and cut.threshold == 0
    assert cut.apply(x[1:], 2).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("start,numel", [(0, 10), (5, 100), (STREAM - 3, 7), (STREAM, STREAM),
                                         (2 * STREAM - 1, STREAM + 2), (3, 0)])
def test_keep_mask_of_a_range_is_that_range_of_the_whole_mask(start, numel):
    whole = keep_mask(3 * STREAM + 11, 0.4, seed=99)
    assert torch.equal(keep_mask(numel, 0.4, 99, start), whole[start:start + numel])


def test_random_keep_of_row_blocks_equals_the_whole_tensor():
    delta = torch.ones(2 * STREAM // 96 + 5, 96)  # blocks straddle stream borders
    whole = random_keep(delta, 0.3, seed=17)
    per_row = delta.shape[1]
    for rows in (1, 1000, 2731):
        blocks = [random_keep(delta[a:a + rows], 0.3, 17, a * per_row) for a in range(0, delta.shape[0], rows)]
        assert torch.equal(torch.cat(blocks), whole), rows
    # an odd skip inside a stream (numpy hands out float32 draws from halves of 64-bit outputs)
    assert torch.equal(random_keep(delta.view(-1)[3:10], 0.3, 17, 3), whole.view(-1)[3:10])
    draws = np.random.Generator(np.random.SFC64(np.random.SeedSequence([17, 0]))).random(10, dtype=np.float32)
    assert torch.equal(whole.view(-1)[:10] > 0, torch.from_numpy(draws < np.float32(0.3)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_random_keep_on_cuda_of_row_blocks_equals_the_whole_tensor():
    delta = torch.ones(2 * STREAM // 96 + 5, 96, device="cuda")
    whole = random_keep(delta, 0.3, seed=17)
    assert abs(float(whole.mean()) - 0.3) < 0.01
    for rows in (1000, 2731):
        blocks = [random_keep(delta[a:a + rows], 0.3, 17, a * 96) for a in range(0, delta.shape[0], rows)]
        assert torch.equal(torch.cat(blocks), whole), rows


def test_gpu_stream_layout_gives_any_range_the_whole_draws():
    """keep_draws.stream_draws' range logic, run with torch's CPU generator (the GPU one is not here)."""
    from evomerge.methods.keep_draws import stream_draws

    whole = stream_draws(2 * STREAM + 50, 5, 0, torch.device("cpu"))
    for start, numel in ((0, 7), (STREAM - 2, 9), (STREAM, STREAM + 50), (13, 2 * STREAM)):
        assert torch.equal(stream_draws(numel, 5, start, torch.device("cpu")), whole[start:start + numel])
    assert not torch.equal(whole[:STREAM], whole[STREAM:2 * STREAM])  # streams are seeded apart
    assert stream_draws(0, 5, 3, torch.device("cpu")).shape == (0,)


def test_row_block_speed_benchmark_runs_and_blocks_give_the_same_bytes(tmp_path):
    """benchmarks/row_block_speed.py on the tiny fixture: both mergers give the same bytes and the bounded one
    really kept a smaller workspace (its timings are for people to read, never asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from evomerge.fixture import FixtureSpec, paper_agents, write_fixture

    write_fixture(FixtureSpec("tiny", paper_agents(3)), tmp_path / "fx")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "row_block_speed.py"
    done = subprocess.run([sys.executable, str(script), "--fixture", str(tmp_path / "fx"), "--methods",
                           "ties,breadcrumbs_ties,dare_linear", "--workspace-mib", "0.25", "--rounds", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["method"] for r in rows] == ["ties", "breadcrumbs_ties", "dare_linear"]
    for row in rows:
        assert row["same_bytes"], row
        assert row["workspace_bytes"]["blocked"] <= 0.25 * 2**20 < row["workspace_bytes"]["whole"], row
