"""The Qwen2.5-shaped fixture generator (evomerge/fixture.py, `evomerge fixture`) at the tiny preset:
Qwen2 names, shapes and dtype, the paper's densities and overlap, bf16-step deltas, determinism, the
Hub's sharded layout, and loading by evomerge's reader and by transformers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from evomerge.io.reader import Checkpoint, CheckpointSet
from evomerge.io.safetensors_format import INDEX_FILE
from evomerge.cli import main
from evomerge.fixture import (
    _MIN_CHANGE, PRESETS, AgentSpec, FixtureSpec, measured_densities, paper_agents, parameter_count, qwen2_tensors,
    write_fixture,
)

AGENTS = ("coding", "tool_use", "memory")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture")
    write_fixture(FixtureSpec("tiny", paper_agents(3)), out)
    return out


def flat(directory: Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint.open(directory)
    with CheckpointSet(ckpt, []) as cs:
        return {n: cs.read(ckpt, n) for n in ckpt.tensors}


def sha(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.glob("*.safetensors")))).hexdigest()


def test_presets_have_qwen25_shapes():
    # (hidden, intermediate, layers, heads, kv heads, vocab, tied) from the Qwen2.5 Instruct config.json files
    assert [(s.hidden_size, s.intermediate_size, s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads,
             s.vocab_size, s.tie_word_embeddings) for s in (PRESETS["0.5b"], PRESETS["1.5b"], PRESETS["7b"])] == [
        (896, 4864, 24, 14, 2, 151936, True), (1536, 8960, 28, 12, 2, 151936, True),
        (3584, 18944, 28, 28, 4, 152064, False)]
    # the published parameter counts: 0.49B, 1.54B, 7.62B
    assert parameter_count(PRESETS["0.5b"]) == 494_032_768
    assert parameter_count(PRESETS["1.5b"]) == 1_543_714_304
    assert parameter_count(PRESETS["7b"]) == 7_615_616_512


def test_tiny_checkpoints_are_qwen2_bf16(tiny):
    expected = {t.name: t.shape for t in qwen2_tensors(PRESETS["tiny"])}
    assert "lm_head.weight" not in expected  # tied, as 0.5B and 1.5B: save_pretrained stores the embedding once
    for name in ("base", *AGENTS):
        ckpt = Checkpoint.open(tiny / name)
        assert {n: i.shape for n, i in ckpt.tensors.items()} == expected
        assert {i.dtype for i in ckpt.tensors.values()} == {"bfloat16"}
        config = json.loads((tiny / name / "config.json").read_text())
        assert (config["model_type"], config["architectures"], config["max_position_embeddings"],
                config["tie_word_embeddings"]) == ("qwen2", ["Qwen2ForCausalLM"], 32768, True)
    with CheckpointSet.open(tiny / "base", [tiny / a for a in AGENTS]) as cs:
        cs.validate()


def test_densities_overlap_and_steps_follow_the_paper(tiny):
    base = flat(tiny / "base")
    names = list(base)
    b = torch.cat([base[n].reshape(-1) for n in names])
    agents = [torch.cat([flat(tiny / a)[n].reshape(-1) for n in names]) for a in AGENTS]
    # every changed entry passes the paper's 1e-5 threshold: measured density = bf16 inequality
    assert measured_densities(b, agents) == [float((a != b).float().mean()) for a in agents]
    for got, spec in zip(measured_densities(b, agents), paper_agents(3)):
        assert got == pytest.approx(spec.density, abs=0.006)  # 140k entries: 0.006 is > 6 standard errors
    masks = [(a.float() - b.float()).abs() > 1e-5 for a in agents]
    count = sum(m.int() for m in masks)
    unique = [float((m & (count == 1)).sum() / m.sum()) for m in masks]
    assert unique[0] < 0.12  # coding: 6.3 % in the paper, 24.6 % if its mask were independent
    assert 0.35 < unique[1] < 0.5 and 0.4 < unique[2] < 0.6  # tool / memory: near chance, as measured
    # a few bf16 steps: for weights well above the threshold, at most 3 units in the last place
    big = b.float().abs() > 0.01
    for a in agents:
        rel = ((a.float() - b.float()).abs() / b.float().abs())[big]
        assert float(rel.max()) <= 3 * 2**-7 + 1e-6
    # every change is small in absolute terms too: tiny weights are lifted past the threshold by a value,
    # never by so many bf16 units that the exponent runs away (once 1e31 for weights of 1e-8)
    for a in agents:
        change = (a.float() - b.float()).abs()
        units = 3 * 2**-7 * b.float().abs()  # 3 units in the last place bound a normal step
        assert bool((change <= torch.clamp(units, min=2 * _MIN_CHANGE)).all())
        assert bool(torch.isfinite(a.float()).all())
    # shared direction: where tool and memory both change an entry, mostly the same way
    both = masks[1] & masks[2]
    same = torch.sign(agents[1].float() - b.float())[both] == torch.sign(agents[2].float() - b.float())[both]
    assert float(same.float().mean()) > 0.7


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    write_fixture(FixtureSpec("tiny", paper_agents(3), with_tokenizer=False), tmp_path / "again")
    write_fixture(FixtureSpec("tiny", paper_agents(3), seed=1, with_tokenizer=False), tmp_path / "other")
    for name in ("base", *AGENTS):
        assert sha(tmp_path / "again" / name) == sha(tiny / name)
        assert sha(tmp_path / "other" / name) != sha(tiny / name)


def test_sharded_like_the_hub_and_loadable_by_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["fixture", str(tmp_path), "--preset", "tiny", "--agents", "2", "--shard-size", "100KB"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "coding", "tool_use"]
    base = tmp_path / "coding"
    index = json.loads((base / INDEX_FILE).read_text())
    files = sorted(base.glob("model-*-of-*.safetensors"))
    assert len(files) == 3 and set(index["weight_map"].values()) == {f.name for f in files}
    model = AutoModelForCausalLM.from_pretrained(base)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    stored = flat(base)
    for name, value in model.state_dict().items():
        if name != "lm_head.weight":
            assert torch.equal(value, stored[name]), name
    tok = AutoTokenizer.from_pretrained(base)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert text.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"
    out = model.generate(**tok(text, return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0


def test_headers_only_is_sparse_and_readable(tmp_path):
    assert main(["fixture", str(tmp_path), "--preset", "7b", "--agents", "1", "--headers-only", "--no-tokenizer"]) == 0
    ckpt = Checkpoint.open(tmp_path / "base")
    assert sum(i.nbytes for i in ckpt.tensors.values()) == 2 * 7_615_616_512
    assert len(ckpt.files) == 4  # 15.2 GB in 5 GB shards, as Qwen2.5-7B-Instruct on the Hub
    assert sum(f.stat().st_blocks * 512 for f in ckpt.files) < 1 << 20  # holes, not data


def test_bad_specs_are_refused(tmp_path):
    from evomerge.errors import EvomergeError

    with pytest.raises(EvomergeError, match="preset"):
        FixtureSpec("13b", paper_agents(3))
    with pytest.raises(EvomergeError, match="density"):
        FixtureSpec("tiny", (AgentSpec("a", 1.5),))
    with pytest.raises(EvomergeError, match="1 to 5"):
        paper_agents(6)
    write_fixture(FixtureSpec("tiny", (AgentSpec("a", 0.1),), with_tokenizer=False), tmp_path)
    with pytest.raises(EvomergeError, match="already exists"):
        write_fixture(FixtureSpec("tiny", (AgentSpec("a", 0.1),), with_tokenizer=False), tmp_path)
