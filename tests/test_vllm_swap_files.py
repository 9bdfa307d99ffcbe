"""The vllm backend's swap through files (engine workers in other processes, `in_process=False`), against a
recording stand-in engine: one file per tensor written as the pairs stream, every check passed before the
workers are asked to reload, and a bad set never reaches them. Runs without vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evaluators.backends.vllm import VLLMGenerator
from evaluators.errors import BackendError

SHAPES = {"a.weight": (4, 3), "b.weight": (5,), "c.weight": (2, 2)}


class _Engine:
    """Records what the workers would reload: every tensor of the staged directory, and its file count."""

    def __init__(self):
        self.reloads: list[tuple[int, dict[str, torch.Tensor]]] = []

    def collective_rpc(self, method, kwargs=None):
        assert method == "reload_weights"
        files = sorted(Path(kwargs["weights_path"]).glob("*.safetensors"))
        state = {}
        for file in files:
            state.update(load_file(str(file)))
        self.reloads.append((len(files), state))

    def reset_prefix_cache(self):
        return True


def _generator() -> VLLMGenerator:
    gen = object.__new__(VLLMGenerator)  # no engine: the swap logic only
    gen.model_dir, gen._llm, gen._swap_by_reference = Path("stand-in"), _Engine(), False
    gen._expected_shapes, gen._swapped, gen._incomplete = dict(SHAPES), 0, False
    return gen


def _weights(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def test_a_stream_is_staged_one_file_per_tensor():
    gen, weights = _generator(), _weights(0)
    assert gen.swap_weights(iter(weights.items())) == len(SHAPES)
    files, state = gen._llm.reloads[-1]
    assert files == len(SHAPES) and state.keys() == weights.keys()
    assert all(torch.equal(state[n], weights[n]) for n in weights)
    assert gen.swap_weights(weights) == len(SHAPES)  # a mapping too


@pytest.mark.parametrize("damage, message", [
    (lambda w: w["b.weight"].__setitem__(2, float("nan")), "'b.weight' has NaN or infinite"),
    (lambda w: w.pop("c.weight"), "1 tensor\\(s\\) of stand-in were not given"),
    (lambda w: w.__setitem__("b.weight", torch.zeros(3)), "'b.weight' has shape \\(3,\\)"),
])
def test_a_bad_stream_never_reaches_the_workers(damage, message):
    gen, weights = _generator(), _weights(1)
    damage(weights)
    with pytest.raises(BackendError, match=message + ".*nothing was swapped"):
        gen.swap_weights(iter(weights.items()))
    assert gen._llm.reloads == [] and not gen._incomplete  # the engine kept its weights: still usable
