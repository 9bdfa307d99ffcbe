"""The RL zoo: GRPO's math, the shared-prompt sampler's log-probabilities, bf16 storage, and a quick build."""

from __future__ import annotations

import json

import pytest
import torch

from evomerge_zoo.grpo import group_advantages
from evomerge_zoo.model import ZooShape


TINY = ZooShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, group=4)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)  # mean .5, std .5
    assert torch.equal(adv[4:], torch.zeros(4))  # a group that agrees teaches nothing
    skewed = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group=4)
    assert torch.allclose(skewed, torch.tensor([3 ** 0.5, -(3 ** -0.5), -(3 ** -0.5), -(3 ** -0.5)]), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from evomerge_zoo.model import new_model

    return new_model(tokenizer, TINY, seed=0)


def test_new_model_weights_are_bf16_values_and_turns_end_at_im_end(tiny_model, tokenizer):
    for name, p in tiny_model.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p, p.to(torch.bfloat16).float()), name
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in tiny_model.generation_config.eos_token_id


def test_shared_prompt_logprobs_equal_a_full_forward(tiny_model, tokenizer):
    """The group's completions read one prompt cache; their log-probs must equal a plain forward over prompt+completion."""
    from evomerge_zoo.sampling import completion_logprobs, sample_groups

    prompts = [tokenizer("The key is blue and the door")["input_ids"], tokenizer("def add(a, b):")["input_ids"]]
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    gen = torch.Generator().manual_seed(0)
    rollouts = sample_groups(tiny_model, tokenizer, prompts, group=3, max_new_tokens=6, temperature=1.0,
                             generator=gen, stop_ids=stops)
    assert rollouts.tokens.shape[0] == 6 and len(rollouts.texts) == 6
    logp = completion_logprobs(tiny_model, rollouts, tokenizer.pad_token_id)
    for row in range(6):
        prompt = prompts[row // 3]
        completion = rollouts.tokens[row][rollouts.mask[row].bool()].tolist()
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            full = torch.log_softmax(tiny_model(input_ids=ids).logits[0].float(), -1)
        expected = torch.stack([full[len(prompt) - 1 + t, tok] for t, tok in enumerate(completion)])
        got = logp[row][: len(completion)]
        assert torch.allclose(got, expected, atol=1e-4), (row, got, expected)
        assert torch.all(logp[row][len(completion):] == 0)


def test_committed_toy_data_is_what_the_generators_give():
    from evomerge_zoo.toy_data import SEARCH_ITEMS, TEST_ITEMS, check_toy_data

    for family in ("coding", "tool_use", "memory"):
        path = check_toy_data(family)
        splits = [json.loads(line)["split"] for line in path.read_text().splitlines()]
        assert splits.count("search") == SEARCH_ITEMS and splits.count("test") == TEST_ITEMS


def test_toy_data_loads_and_scores_through_the_suites(tmp_path):
    """The suites' own loaders read the toy files, and their scorers pass the canonical replies."""
    from evomerge_zoo.families import FAMILIES, build_family_suite, reward_function
    from evomerge_zoo.toy_data import toy_data_path, toy_splits

    for family in ("tool_use", "memory", "coding"):
        suite = build_family_suite(family, toy_data_path(family))
        tasks = toy_splits(family)["test"][:6]
        items = {str(it["id"]): it for it in suite.items(split="test")}
        assert len(items) == 128
        chosen = [items[str(t.item.get("id", t.item.get("task_id")))] for t in tasks]
        rewards = reward_function(family, suite)
        good = rewards(chosen, [FAMILIES[family].reply(t, False) for t in tasks])
        bad = rewards(chosen, [FAMILIES[family].reply(t, True) for t in tasks])
        assert good == [1.0] * 6 and bad == [0.0] * 6, family


def _train_tiny(tokenizer, tmp_path, seed):
    from evomerge_zoo.families import build_family_suite, reward_function
    from evomerge_zoo.grpo import GRPOSettings, train_grpo
    from evomerge_zoo.mixture import pretraining_examples, suite_prompts
    from evomerge_zoo.model import new_model
    from evomerge_zoo.pretrain import PretrainSettings, pretrain
    from evomerge_zoo.toy_data import toy_data_path

    model = new_model(tokenizer, TINY, seed)
    rates = {"coding": 0.5, "tool_use": 0.5, "memory": 0.5}
    examples = pretraining_examples(tokenizer, seed, rates, {}, tmp_path)
    pretrain(model, examples, tokenizer.pad_token_id, PretrainSettings(steps=3, tokens_per_batch=1024, warmup=1), seed)
    suite = build_family_suite("memory", toy_data_path("memory"))
    prompts = ((item, ids) for _, item, ids in suite_prompts("memory", tokenizer, seed, (), tmp_path, chunk=16))
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    history = train_grpo(model, tokenizer, prompts, reward_function("memory", suite), 4, stops,
                         GRPOSettings(steps=2, prompts_per_step=2, group=4, lr=1e-2), seed)
    return model.state_dict(), history


def test_pretraining_and_grpo_are_deterministic_from_the_seed(tokenizer, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        first, log1 = _train_tiny(tokenizer, tmp_path / "a", seed=3)
        again, log2 = _train_tiny(tokenizer, tmp_path / "b", seed=3)
    finally:
        torch.use_deterministic_algorithms(False)
    assert log1 == log2
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_build_refuses_a_non_empty_directory(tmp_path, capsys):
    from evomerge.cli import main

    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "keep.txt").write_text("mine")
    assert main(["zoo", "build", str(tmp_path / "zoo"), "--quick", "--no-progress"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "zoo" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_quick_build_writes_a_loadable_bf16_zoo(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge_zoo.build import build_zoo

    out = tmp_path / "zoo"
    summary = build_zoo(out, seed=1, quick=True, show_progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zoo.partial")]  # staging renamed away
    for name in ("base", "coding", "tool_use", "memory"):
        with safe_open(str(out / name / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        model = AutoModelForCausalLM.from_pretrained(out / name)
        tokenizer = AutoTokenizer.from_pretrained(out / name)
        head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
        assert head_dim >= 32  # the smallest head vLLM's CPU attention serves
        assert tokenizer.chat_template
    written = json.loads((out / "zoo.json").read_text())
    assert written["seed"] == 1 and written["quick"] is True
    table = written["heldout_test"]
    assert set(table) == {"base", "coding", "tool_use", "memory"}
    assert all(set(row) == {"coding", "tool_use", "memory"} for row in table.values())
    assert set(written["task_vectors"]["model"]["agents"]) == {"coding", "tool_use", "memory"}
    assert summary["heldout_test"] == table


def test_the_library_never_imports_the_zoo_builder():
    """The zoo depends on evomerge, not the other way round: no module of evomerge/ imports evomerge_zoo
    (the `evomerge zoo` command does, inside its run()), and building the whole CLI parser loads none of it."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted((root / "evomerge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                inside_run = path.name == "zoo.py" and path.parent.name == "commands"
                if name.split(".")[0] == "evomerge_zoo" and not inside_run:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    probe = ("import sys, evomerge, evomerge.cli; evomerge.cli.build_parser(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evomerge_zoo'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "[]"
