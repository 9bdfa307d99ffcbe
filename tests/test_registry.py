"""Suites and backends by name; suite configurations from YAML."""

from __future__ import annotations

import pytest

from evaluators import registry
from evaluators.backends.replay import ReplayGenerator
from evaluators.errors import SuiteConfigError
from evaluators.suites.coding import CodingSuite


def test_build_suite_by_kind_mapping_or_config():
    suite = registry.build_suite("coding")
    assert isinstance(suite, CodingSuite) and suite.name == "coding" and suite.config.split == "search"
    named = registry.build_suite({"kind": "coding", "limit": 5}, name="coding_small")
    assert named.name == "coding_small" and named.config.limit == 5
    assert registry.build_suite(named.config).name == "coding"


def test_yaml_configs_default_kind_to_the_name(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "model: ignored\n"
        "suites:\n"
        "  coding: {limit: 40}\n"
        "  coding_toy:\n"
        "    kind: coding\n"
        "    data: toy\n"
        "    split: test\n"
        "    chat: false\n"
        "    generation: {max_new_tokens: 64, stop: [\"\\n\\n\"]}\n"
        "    options: {timeout_seconds: 2}\n"
    )
    configs = registry.load_suite_configs(path)
    assert list(configs) == ["coding", "coding_toy"]
    assert configs["coding"].kind == "coding" and configs["coding"].limit == 40
    toy = configs["coding_toy"]
    assert (toy.kind, toy.data, toy.split, toy.chat) == ("coding", "toy", "test", False)
    assert toy.generation.settings(seed=1).stop == ("\n\n",)
    assert registry.load_suite_configs({"coding": None})["coding"].kind == "coding"


def test_config_errors_name_the_file_and_suite(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("suites:\n  fancy: {data: x.jsonl}\n")
    with pytest.raises(SuiteConfigError, match=r"bad.yaml: unknown suite 'fancy' \(and no 'kind' given\); available"):
        registry.load_suite_configs(path)
    path.write_text("suites:\n  coding: {limits: 3}\n")
    with pytest.raises(SuiteConfigError, match=r"bad.yaml: invalid settings for suite 'coding': limits: Extra inputs"):
        registry.load_suite_configs(path)
    path.write_text("suites:\n  fancy: {kind: magic}\n")
    with pytest.raises(SuiteConfigError, match=r"bad.yaml: suite 'fancy' has unknown kind 'magic'"):
        registry.load_suite_configs(path)
    path.write_text("suites: [coding]\n")
    with pytest.raises(SuiteConfigError, match="expected a non-empty mapping"):
        registry.load_suite_configs(path)
    with pytest.raises(SuiteConfigError, match="does not exist"):
        registry.load_suite_configs(tmp_path / "missing.yaml")


def test_unknown_or_unimportable_names_give_clear_errors(monkeypatch):
    with pytest.raises(SuiteConfigError, match=r"unknown suite 'nope' \(and no 'kind' given\); available: .*coding"):
        registry.build_suite("nope")
    monkeypatch.setitem(registry.SUITES, "ghost", "evaluators.suites.ghost_suite:GhostSuite")
    with pytest.raises(SuiteConfigError, match=r"suite 'ghost' is not available here: importing evaluators.suites.ghost"):
        registry.build_suite("ghost")
    with pytest.raises(SuiteConfigError, match="unknown backend 'tpu'"):
        registry.build_backend("tpu", "model")


def test_build_backend_passes_only_the_options_a_backend_takes(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "saved", "evaluators.backends.replay:ReplayGenerator")
    gen = registry.build_backend("saved", {"a": "x"}, device="cpu", batch_size=4)
    assert isinstance(gen, ReplayGenerator) and gen.samples == {"a": ["x"]}


def test_scoring_of_names_the_rule_a_configuration_selects():
    parse = registry.parse_suite_config
    assert registry.scoring_of(parse("tool_use", None)) == "lenient (prompt: suite)"
    assert registry.scoring_of(parse("tool_use", {"options": {"scoring": "bfcl"}})) == "bfcl (prompt: suite)"
    assert registry.scoring_of(parse("tool_use", {"options": {"scoring": "bfcl", "prompt": "bfcl"}})) == \
        "bfcl (prompt: bfcl)"
    assert registry.scoring_of(parse("memory", None)) == "sub_em"
    assert registry.scoring_of(parse("memory", {"options": {"scoring": "ruler_exact"}})) == "ruler_exact"
    assert registry.scoring_of(parse("coding", None)) == ""  # one rule only
    assert registry.scoring_of(parse("x", {"kind": "tool_use"}).model_copy(update={"kind": "custom"})) == ""
