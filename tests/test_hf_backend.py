"""The transformers backend on the tiny generated model: batching, seeding, chat, stops, weight swap."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from evaluators.backends.hf import HFGenerator, cut_at_stop
from evaluators.errors import BackendError
from evaluators.protocol import GenerationSettings, Generator, Request, WeightSwappable

PROMPTS = ["def add(a, b):\n    return", "import os\nprint(", "The answer is", "x = [1, 2, 3]\nfor i in x:\n"]
GREEDY = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def gen(tiny_family):
    return HFGenerator(tiny_family["base"], batch_size=16)


def requests(prompts=PROMPTS):
    return [Request(f"r{i}", p) for i, p in enumerate(prompts)]


def logits(gen, text="def add(a, b):"):
    ids = torch.tensor([gen.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return gen.model(ids).logits


def test_is_a_swappable_generator_in_fp32_on_cpu(gen, tiny_family_llama):
    assert isinstance(gen, Generator) and isinstance(gen, WeightSwappable)
    assert gen.device.type == "cpu"
    bf16_checkpoint = HFGenerator(tiny_family_llama["base"])  # stored in bf16, run in fp32 on CPU
    assert bf16_checkpoint.model.dtype == torch.float32


def test_greedy_is_deterministic_and_batching_does_not_change_it(gen):
    batched = gen.generate(requests(), GREEDY)
    assert batched == gen.generate(requests(), GREEDY)
    one_by_one = [gen.generate([r], GREEDY)[0] for r in requests()]
    assert batched == one_by_one  # left padding: padded rows decode as if alone
    assert all(len(out) == 1 and out[0] for out in batched)
    assert gen.last_usage["requests"] == 1 and gen.last_usage["completion_tokens"] > 0


def test_small_batches_give_the_same_greedy_output(gen, tiny_family):
    small = HFGenerator(gen.model, tokenizer=gen.tokenizer, batch_size=3)
    assert small.generate(requests(), GREEDY) == gen.generate(requests(), GREEDY)


def test_seeded_sampling_is_reproducible(gen):
    sampled = GenerationSettings(max_new_tokens=12, temperature=1.0, n=3, seed=7)
    first = gen.generate(requests(), sampled)
    assert first == gen.generate(requests(), sampled)
    assert all(len(out) == 3 for out in first)
    assert len({s for out in first for s in out}) > 1  # samples differ from each other
    other_seed = gen.generate(requests(), GenerationSettings(max_new_tokens=12, temperature=1.0, n=3, seed=8))
    assert other_seed != first


def test_greedy_n_repeats_the_single_decode(gen):
    out = gen.generate(requests()[:2], GenerationSettings(max_new_tokens=8, n=3))
    assert all(len(set(samples)) == 1 and len(samples) == 3 for samples in out)


def test_chat_prompts_use_the_chat_template(gen):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    rendered = gen.render(Request("c", messages))
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n"
                        "<|im_start|>assistant\n")
    assert gen.generate([Request("c", messages)], GREEDY) == gen.generate([Request("p", rendered)], GREEDY)


def test_stop_strings_cut_the_completion_and_end_generation(gen):
    long = GenerationSettings(max_new_tokens=24)
    full = gen.generate(requests()[:1], long)[0][0]
    pairs = (full[i:i + 2] for i in range(4, len(full) - 2))
    stop = next(p for p in pairs if p.isascii() and p.isprintable())
    expected = full[:full.find(stop)]
    stopped = gen.generate(requests()[:1], GenerationSettings(max_new_tokens=24, stop=(stop,)))
    assert stopped[0][0] == expected
    assert gen.last_usage["completion_tokens"] < 24


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("abc\ndef x\nclass y", ["\nclass", "\ndef"]) == "abc"
    assert cut_at_stop("abc", ["zzz"]) == "abc"


def test_swap_weights_changes_outputs_and_restoring_restores_them(tiny_family):
    gen = HFGenerator(tiny_family["base"])
    base_state = load_file(tiny_family["base"] / "model.safetensors")
    agent_state = load_file(tiny_family["tool_use"] / "model.safetensors")
    before_logits, before_text = logits(gen), gen.generate(requests(), GREEDY)
    pointers = {name: p.data_ptr() for name, p in gen.model.named_parameters()}

    assert gen.swap_weights(agent_state.items()) == len(agent_state)
    agent = HFGenerator(tiny_family["tool_use"])
    assert torch.equal(logits(gen), logits(agent))  # the swapped model is exactly the agent
    assert {name: p.data_ptr() for name, p in gen.model.named_parameters()} == pointers  # in place

    noise = torch.Generator().manual_seed(0)
    gen.swap_weights({k: v + torch.randn(v.shape, generator=noise) * 0.5 for k, v in base_state.items()})
    assert gen.generate(requests(), GREEDY) != before_text

    gen.swap_weights(base_state)
    assert torch.equal(logits(gen), before_logits)
    assert gen.generate(requests(), GREEDY) == before_text


def test_bad_swaps_are_rejected_before_copying(tiny_family):
    gen = HFGenerator(tiny_family["base"])
    before = logits(gen)
    good = load_file(tiny_family["coding"] / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(BackendError, match=r"'model.layers.9.nope' is not a tensor of the resident .*nothing was copied"):
        gen.swap_weights({**good, "model.layers.9.nope": torch.zeros(3)})
    with pytest.raises(BackendError, match=rf"'{name}' has shape \(2, 2\) but the .* expects \(128, 64\)"):
        gen.swap_weights({**good, name: torch.zeros(2, 2)})
    assert torch.equal(logits(gen), before)  # a mapping is checked completely first

    stream = iter([("model.norm.weight", good["model.norm.weight"]), ("lm_head.bias", torch.zeros(3))])
    with pytest.raises(BackendError, match=r"1 tensor\(s\) had already been copied.*partial swap"):
        gen.swap_weights(stream)


def _stream(state, fail_at=None, alive=None):
    """(name, tensor) pairs made one at a time (a fresh copy each: nothing here keeps one), as a streaming merge
    gives them; raises at `fail_at` as a merge failing midway. `alive` collects, per yield, how many earlier
    tensors are still referenced."""
    import weakref

    earlier = []
    for i, name in enumerate(state):
        if i == fail_at:
            raise RuntimeError("the merge failed midway")
        tensor = state[name].clone()
        if alive is not None:
            alive.append(sum(ref() is not None for ref in earlier))
            earlier.append(weakref.ref(tensor))
        yield name, tensor
        del tensor


def test_a_stream_is_copied_tensor_by_tensor(tiny_family):
    gen = HFGenerator(tiny_family["base"])
    agent_state = load_file(tiny_family["tool_use"] / "model.safetensors")
    alive: list[int] = []
    assert gen.swap_weights(_stream(agent_state, alive=alive)) == len(agent_state)
    assert max(alive) <= 1, alive  # the previous pair is still bound while the next is made: nothing more
    assert torch.equal(logits(gen), logits(HFGenerator(tiny_family["tool_use"])))


def test_a_swap_failing_midway_blocks_generation_until_every_tensor_is_copied_again(tiny_family):
    gen = HFGenerator(tiny_family["base"])
    base_state = load_file(tiny_family["base"] / "model.safetensors")
    agent_state = load_file(tiny_family["coding"] / "model.safetensors")
    fresh_text = HFGenerator(tiny_family["coding"]).generate(requests(), GREEDY)
    with pytest.raises(RuntimeError, match="midway"):
        gen.swap_weights(_stream(agent_state, fail_at=len(agent_state) // 2))
    with pytest.raises(BackendError, match="partial swap"):  # base and agent mixed: not scored
        gen.generate(requests(), GREEDY)
    gen.swap_weights({"model.norm.weight": agent_state["model.norm.weight"]})  # one tensor: still a mix
    with pytest.raises(BackendError, match="partial swap"):
        gen.generate(requests(), GREEDY)
    gen.swap_weights(_stream(agent_state))  # the next candidate: a fresh model's outputs
    assert gen.generate(requests(), GREEDY) == fresh_text
    assert torch.equal(logits(gen), logits(HFGenerator(tiny_family["coding"])))
    gen.swap_weights(base_state)


def test_tied_embeddings_take_either_name_but_not_two_values(tokenizer):
    from transformers import AutoModelForCausalLM

    from evomerge.tiny_checkpoints import tiny_config

    config = tiny_config("llama", len(tokenizer))
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    gen = HFGenerator(model, tokenizer=tokenizer)
    assert gen.model.lm_head.weight.data_ptr() == gen.model.model.embed_tokens.weight.data_ptr()
    new = torch.randn_like(gen.model.lm_head.weight)
    gen.swap_weights({"model.embed_tokens.weight": new})
    assert torch.equal(gen.model.lm_head.weight, new)
    gen.swap_weights({"model.embed_tokens.weight": new, "lm_head.weight": new.clone()})  # equal values: fine
    with pytest.raises(BackendError, match="are tied"):
        gen.swap_weights({"model.embed_tokens.weight": new, "lm_head.weight": new + 1})


def test_loading_errors_name_the_directory(tmp_path, tokenizer):
    with pytest.raises(BackendError, match="not a Hugging Face checkpoint directory"):
        HFGenerator(tmp_path)
    from transformers import AutoModelForCausalLM

    from evomerge.tiny_checkpoints import tiny_config

    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    no_chat = type(tokenizer).from_pretrained(tok_dir)  # a copy: the session fixture keeps its template
    no_chat.chat_template = None
    gen = HFGenerator(AutoModelForCausalLM.from_config(tiny_config("qwen2", len(tokenizer))), tokenizer=no_chat)
    with pytest.raises(BackendError, match="has no chat template; use a plain-text prompt format"):
        gen.generate([Request("c", [{"role": "user", "content": "hi"}])], GREEDY)


def test_a_callers_training_model_keeps_its_mode_and_rng(gen):
    model = gen.model.train()
    state = torch.get_rng_state()
    HFGenerator(model, tokenizer=gen.tokenizer).generate(requests()[:1], GenerationSettings(max_new_tokens=4,
                                                                                            temperature=1.0))
    assert model.training and torch.equal(torch.get_rng_state(), state)
    model.eval()


@pytest.mark.cuda
def test_runs_on_a_gpu_in_bf16_and_swaps_cpu_tensors(tiny_family):
    gen = HFGenerator(tiny_family["base"], device="cuda")
    assert gen.model.dtype == torch.bfloat16 and gen.model.device.type == "cuda"
    first = gen.generate(requests(), GREEDY)
    assert first == gen.generate(requests(), GREEDY)
    base_state = load_file(tiny_family["base"] / "model.safetensors")  # CPU fp32 tensors, converted on copy
    gen.swap_weights({k: torch.zeros_like(v) for k, v in base_state.items()})
    assert gen.generate(requests(), GREEDY) != first
    gen.swap_weights(base_state)
    assert gen.generate(requests(), GREEDY) == first
