"""`evomerge analyze`: per-agent change statistics (the RAM paper's Fig. 2) per model, layer and module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.analysis import analyze, format_report, report_to_dict
from evomerge.cli import main

# Hand-built task vectors over three 10-entry tensors. Entry sets each agent changes (|tau| = 1e-3);
# every other entry moves by 1e-6, below epsilon. In layer 1, agent 2 changes only entry 3 (shared).
CHANGES = {
    "model.embed_tokens.weight": ({0, 1, 2, 3}, {2, 3, 4, 5}, {3, 6}),
    "model.layers.0.mlp.up_proj.weight": ({0, 1, 2, 3}, {2, 3, 4, 5}, {3, 6}),
    "model.layers.1.self_attn.q_proj.weight": ({0, 1, 2, 3}, {2, 3, 4, 5}, {3}),
}


def _checkpoint(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}))
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture
def hand_built(tmp_path):
    base = {name: torch.linspace(-1, 1, 10) for name in CHANGES}
    paths = [_checkpoint(tmp_path / "base", base)]
    for t in range(3):
        agent = {}
        for name, sets in CHANGES.items():
            delta = torch.full((10,), 1e-6)
            delta[sorted(sets[t])] = 1e-3
            agent[name] = base[name] + delta
        paths.append(_checkpoint(tmp_path / f"agent{t}", agent))
    return paths


def test_counts_shares_rho_and_lambda_are_exact(hand_built):
    base, *agents = hand_built
    report = report_to_dict(analyze(base, agents, epsilon=1e-5))
    assert report["agents"] == ["agent0", "agent1", "agent2"]
    whole = report["model"]["agents"]
    assert report["model"]["total"] == 30
    # agent 0 in each tensor: entries 0, 1 unique, 2 shared with one other, 3 with both
    a0 = whole["agent0"]
    assert (a0["changed"], a0["unique"], a0["shared"], a0["shared_with"]) == (12, 6, 6, [6, 3, 3])
    assert a0["density"] == pytest.approx(0.4) and a0["unique_share"] == pytest.approx(0.5)
    assert a0["shared_with_share"] == pytest.approx([0.5, 0.25, 0.25])
    assert a0["rho"] == pytest.approx(1.0)
    assert a0["lambda_ram_plus"] == pytest.approx(1.1) and a0["lambda_ram_plus_soft"] == pytest.approx(1.05)
    # agent 2: changed 3, 6 | 3, 6 | 3 -> unique 2 of 5, rho = 3/2
    a2 = whole["agent2"]
    assert (a2["changed"], a2["unique"], a2["shared_with"]) == (5, 2, [2, 0, 3])
    assert a2["rho"] == pytest.approx(1.5)
    assert a2["lambda_ram_plus"] == pytest.approx(1.15)
    assert a2["lambda_ram_plus_soft"] == pytest.approx(1 + 0.1 * 1.5 / 2.5)
    # layer 1 alone: agent 2 has no unique change -> rho undefined, lambda 1
    layer1 = report["layers"]["1"]["agents"]["agent2"]
    assert layer1["rho"] is None and layer1["lambda_ram_plus"] == 1.0 and layer1["unique_share"] == 0.0
    assert set(report["layers"]) == {"0", "1"}
    assert set(report["modules"]) == {"embed", "mlp", "attn"}
    assert report["modules"]["embed"]["agents"]["agent2"]["density"] == pytest.approx(0.2)


def test_alpha_clips_lambda(hand_built):
    base, *agents = hand_built
    report = report_to_dict(analyze(base, agents, epsilon=1e-5, r=0.2, alpha=0.5))
    assert report["model"]["agents"]["agent2"]["lambda_ram_plus"] == pytest.approx(1 + 0.2 * 0.5)


def test_epsilon_is_the_threshold(hand_built):
    base, *agents = hand_built
    tight = report_to_dict(analyze(base, agents, epsilon=1e-7))  # the 1e-6 noise now counts: every entry changed
    assert all(s["density"] == pytest.approx(1.0) for s in tight["model"]["agents"].values())
    loose = report_to_dict(analyze(base, agents, epsilon=1e-2))  # nothing changed
    assert all(s["changed"] == 0 and s["rho"] is None for s in loose["model"]["agents"].values())


def test_matches_brute_force_on_the_tiny_family(tiny_family):
    names = ("coding", "tool_use", "memory")
    report = report_to_dict(analyze(tiny_family["base"], [tiny_family[n] for n in names], epsilon=1e-5))
    base = load_file(tiny_family["base"] / "model.safetensors")
    agents = [load_file(tiny_family[n] / "model.safetensors") for n in names]
    masks = np.stack([
        np.concatenate([(a[k].float() - base[k].float()).abs().numpy().ravel() > 1e-5 for k in sorted(base)])
        for a in agents
    ])
    c = masks.sum(0)
    for t, name in enumerate(names):
        stats = report["model"]["agents"][name]
        assert stats["changed"] == masks[t].sum()
        assert stats["shared_with"] == [int((masks[t] & (c == k + 1)).sum()) for k in range(3)]
    # the fixture's densities (0.05, 0.45, 0.55) come back
    assert [round(report["model"]["agents"][n]["density"], 2) for n in names] == [0.05, 0.45, 0.55]


def test_cli_prints_tables_and_writes_json_and_png(hand_built, tmp_path, capsys):
    base, *agents = hand_built
    js, png = tmp_path / "stats.json", tmp_path / "stats.png"
    code = main(["analyze", "--base", str(base), "--models", *map(str, agents), "--json", str(js),
                 "--plot", str(png), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "whole model" in out and "per decoder layer" in out and "per module type" in out
    assert "agent2" in out and "1.150" in out  # lambda RAM+ of agent 2
    assert json.loads(js.read_text())["model"]["agents"]["agent0"]["changed"] == 12
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_format_report_marks_undefined_rho(hand_built):
    base, *agents = hand_built
    text = format_report(analyze(base, agents[2:], epsilon=1e-5))  # a single agent: nothing is shared
    assert "agent2" in text and "0.000" in text  # rho = 0 shared / 5 unique


def test_cli_errors_are_clean(hand_built, tiny_family, tmp_path, capsys):
    base, *agents = hand_built
    assert main(["analyze", "--base", str(base), "--models", str(tiny_family["coding"]), "--no-progress"]) == 1
    assert "error: " in capsys.readouterr().err
    assert main(["analyze", "--base", str(base), "--models", str(agents[0]), "--json",
                 str(tmp_path / "no" / "dir" / "x.json"), "--no-progress"]) == 1
    assert "does not exist" in capsys.readouterr().err
