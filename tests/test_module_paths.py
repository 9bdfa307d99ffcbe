"""The typed values of the scoring layer, and the deep module paths kept importable for one release."""

import importlib
import math

import pytest

from evomerge.scoring.outcomes import JobKey, SuiteSummary


def test_job_keys_are_typed_hashable_and_distinct_per_evaluation():
    keys = {JobKey.trial(12, 0), JobKey.trial(12, 1), JobKey.trial_heldout(12), JobKey.reference("base"),
            JobKey.reference("base", "heldout"), JobKey.point(12, "search"), JobKey.point(12, "heldout")}
    assert len(keys) == 7
    key = JobKey.trial(12, 1)
    assert (key.subject, key.id, key.side, key.rung) == ("trial", 12, "search", 1)
    assert str(key) == "trial/12/search/r1" and str(JobKey.reference("base", "heldout")) == "reference/base/heldout"
    with pytest.raises(AttributeError):
        key.rung = 2  # frozen


def test_a_suite_summary_round_trips_exactly_and_keeps_a_missing_standard_error():
    result = {"suite": "coding", "mean": 0.1 + 0.2, "stderr": float("nan"), "n": 7, "items": [], "seconds": 1.0}
    s = SuiteSummary.from_dict(result)
    assert s.to_dict()["mean"] == 0.1 + 0.2 and math.isnan(s.to_dict()["stderr"]) and s.n == 7
    assert list(s.to_dict()) == ["mean", "stderr", "n"]  # the layout written to references.json and sweep.json
    assert SuiteSummary.from_dict({"mean": 0.5, "n": 2}).stderr is None


@pytest.mark.parametrize("old,new,names", [
    ("evomerge.runner", "evomerge.search.loop", ["run_search", "RunSummary", "StalledError"]),
    ("evomerge.experiment", "evomerge.search.experiment", ["Experiment", "Optimizer", "Fidelity"]),
    ("evomerge.experiment", "evomerge.scoring.settings", ["Objective", "Workers", "Generator", "resolve_paths"]),
    ("evomerge.genome", "evomerge.search.space", ["SearchSpace", "read_num_layers"]),
    ("evomerge.genome", "evomerge.search.space_spec", ["load_space_spec", "list_bundled_spaces"]),
    ("evomerge.workers", "evomerge.scoring.workers", ["Worker", "WorkerSetup", "WorkerStartError"]),
    ("evomerge.workers", "evomerge.scoring.pools", ["build_pool", "LocalPool", "InlinePool"]),
    ("evomerge.workers", "evomerge.scoring.outcomes", ["EvalJob", "EvalOutcome"]),
    ("evomerge.jobs", "evomerge.scoring.queue", ["CachedJobs"]),
    ("evomerge.store", "evomerge.scoring.cache", ["EvalCache", "weights_identity", "default_cache_dir"]),
    ("evomerge.store", "evomerge.io.atomic", ["write_json_atomic", "canonical_json"]),
    ("evomerge.report", "evomerge.search.record", ["trial_header", "trial_row", "write_front_json"]),
    ("evomerge.tables", "evomerge.report.tables", ["Score", "TableRow", "to_markdown"]),
    ("evomerge.sweep_experiment", "evomerge.sweep.experiment", ["load_sweep_experiment", "SweepExperiment"]),
    ("evomerge.sweep", "evomerge.sweep.run", ["run_sweep", "SweepSummary"]),
])
def test_old_deep_paths_stay_importable_and_name_the_same_objects(old, new, names):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"


def test_the_old_run_store_still_opens_a_run_directory_and_its_storage(tmp_path):
    from evomerge.store import RunStore

    store = RunStore(tmp_path / "run")
    store.dir.mkdir()
    assert store.storage_url.endswith("run/study.db") and store.existing_trials() == 0
