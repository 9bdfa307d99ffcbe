"""The worker's stream filter (evomerge/scoring/workers.py `_finite`): pairs pass through one at a time, the first
non-finite merged tensor fails the candidate."""

import pytest
import torch

from evomerge.scoring.workers import CandidateError, _finite


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_first_non_finite_tensor_fails_the_candidate(dtype):
    good = torch.ones(4, dtype=dtype)
    bad = good.clone()
    bad[2] = float("inf")
    stream = _finite(iter([("a", good), ("b", bad), ("c", good)]))
    assert next(stream) == ("a", good)  # streamed: the first pair comes before the bad one is looked at
    with pytest.raises(CandidateError, match="merged tensor 'b' has NaN or infinite values"):
        next(stream)


def test_integer_tensors_pass():
    assert [n for n, _ in _finite(iter([("ids", torch.arange(3)), ("w", torch.zeros(2))]))] == ["ids", "w"]
