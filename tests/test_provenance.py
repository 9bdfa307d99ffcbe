"""The run record says what produced each score: backend and its version, dtype, device, sandbox mode."""

import json
from types import SimpleNamespace

import optuna
import pytest
import transformers

from evomerge.scoring.cache import EvalCache
from evomerge.scoring.outcomes import Producer
from evomerge.scoring.workers import backend_version, describe_producer
from evomerge.search.experiment import Experiment
from evomerge.search.loop import run_search
from evomerge.search.storage import study_name

import search_helpers as sh

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HF_CPU = {"backend": "hf", "backend_version": transformers.__version__, "dtype": "float32", "device": "cpu",
          "sandbox": None}


def test_a_code_running_suite_records_its_sandbox_mode_and_the_engine_its_dtype():
    coding = SimpleNamespace(sandbox=SimpleNamespace(isolation="unshare"))
    engine = SimpleNamespace(dtype="torch.bfloat16")
    producer = describe_producer({"backend": "hf", "dtype": None}, engine, "cuda:0", coding)
    assert producer == Producer("hf", transformers.__version__, "bfloat16", "cuda:0", "unshare")
    # no engine dtype: the requested one; a suite without a sandbox runs no code
    assert describe_producer({"backend": "vllm", "dtype": "float16"}, object(), "cpu", object()) == \
        Producer("vllm", backend_version("vllm"), "float16", "cpu", None)


def test_the_cache_keeps_the_producer_beside_the_result_and_reads_older_entries(tmp_path):
    cache = EvalCache(tmp_path)
    producer = Producer("hf", "4.0", "float32", "cpu", "bwrap")
    cache.put("ab" * 32, {"mean": 0.5}, producer)
    assert cache.get_with_producer("ab" * 32) == ({"mean": 0.5}, producer)
    assert cache.get("ab" * 32) == {"mean": 0.5}  # the result itself is unchanged
    cache.put("cd" * 32, {"mean": 0.25})  # as written before producers were recorded
    assert cache.get_with_producer("cd" * 32) == ({"mean": 0.25}, None)


def test_every_score_of_a_search_names_its_producer_also_when_it_comes_from_the_cache(tiny_family, tmp_path):
    exp_dict = sh.experiment_dict(tiny_family, tmp_path, budget=3, cache={"enabled": True, "dir": str(tmp_path / "c")})
    exp = Experiment.from_dict(exp_dict)
    for name in ("first", "second"):  # the second run is answered by the cache
        run_search(exp, tmp_path / name, suite_factory=sh.suite_factory, progress=False)
        run_dir = tmp_path / name
        refs = json.loads((run_dir / "references.json").read_text())
        assert refs["base"]["scored_by"] == {s: HF_CPU for s in ("coding", "tool_use", "memory")}
        study = optuna.load_study(study_name=study_name(run_dir), storage=f"sqlite:///{run_dir / 'study.db'}")
        results = [t.user_attrs["result"] for t in study.get_trials() if t.state.name == "COMPLETE"]
        assert results and all(r["scored_by"]["coding"] == HF_CPU for r in results)
        heldout = json.loads((run_dir / "heldout.json").read_text())
        assert all(e["scored_by"]["memory"] == HF_CPU for section in heldout.values() for e in section.values())
        html = (run_dir / "report.html").read_text()
        assert f"Scored by: hf (transformers {transformers.__version__}), float32 on cpu: coding, memory, tool_use." in html
    assert results[0]["worker"] == "cache"
