"""The paper model set end to end on tiny stand-ins with the vllm backend exactly as the model set configures
it (bfloat16, max_model_len 32768): see tests/paper_smoke.py. Opt-in like tests/test_vllm_backend.py: run with
the vLLM environment's python, `.venv-vllm/bin/python -m pytest tests/test_paper_smoke_vllm.py` (.ci/run does)."""

from __future__ import annotations

import pytest

from paper_smoke import build_standins, run_search, run_table1

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    return build_standins(tmp_path_factory.mktemp("paper_standins"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_table1_sweep_runs_on_the_paper_model_set(standins, tmp_path):
    run_table1(standins, "vllm", tmp_path / "table1")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_search_runs_on_the_paper_model_set(standins, tmp_path):
    run_search(standins, "vllm", tmp_path / "search")
