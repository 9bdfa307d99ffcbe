"""The paper model set end to end on tiny stand-ins with the hf backend (see tests/paper_smoke.py): a Table 1
sweep with one grid point (TIES and RAM+ rows) and a search with a budget of two, 2 items per suite."""

from __future__ import annotations

import pytest

from paper_smoke import AGENTS, build_standins, run_search, run_table1


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    return build_standins(tmp_path_factory.mktemp("paper_standins"))


def test_standins_have_the_paper_models_context_and_template(standins):
    from transformers import AutoConfig, AutoTokenizer

    for name in ("base", *AGENTS):
        assert AutoConfig.from_pretrained(standins[name]).max_position_embeddings == 32768
    tok = AutoTokenizer.from_pretrained(standins["base"])
    assert "<tool_call>" in tok.chat_template and "You are Qwen" in tok.chat_template


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_table1_sweep_runs_on_the_paper_model_set(standins, tmp_path):
    rows = run_table1(standins, "hf", tmp_path / "table1")
    assert all(r["humaneval"] != "" for r in rows)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_search_runs_on_the_paper_model_set(standins, tmp_path):
    front = run_search(standins, "hf", tmp_path / "search")
    assert set(front["members"][0]["heldout"]) >= {"humaneval", "memory_14k", "parallel_multiple"}
