import pytest

from evomerge.errors import ExperimentError
from evomerge.io.atomic import write_json_atomic
from evomerge.rundir import RunDir
from evomerge.scoring.cache import EvalCache, weights_identity
from evomerge.search.experiment import Experiment
from evomerge.search.storage import storage_url


def experiment(**kw):
    data = dict(name="s", base="/b", models={"a": "/a", "c": "/c"}, objectives={"coding": {"data": "toy"}}, budget=10)
    data.update(kw)
    return Experiment.from_dict(data)


def test_cache_key_covers_weights_suite_slice_and_generation(tmp_path):
    fp = {"/b": "fb", "/a": "fa", "/c": "fc", "/moved/a": "fa"}
    recipe = {"base": "/b", "models": ["/a", "/c"], "method": "ties", "parameters": {"density": 0.5}}
    suite = {"kind": "coding", "data": "toy", "limit": None}
    gen = {"backend": "hf", "dtype": None, "options": {}}
    key = EvalCache.key(weights_identity(recipe, fp), suite, "search", 8, 0, gen)
    assert key == EvalCache.key(weights_identity(dict(recipe), fp), dict(suite), "search", 8, 0, dict(gen))
    # a checkpoint that moved keeps its entries (content fingerprints, not paths)
    moved = {**recipe, "models": ["/moved/a", "/c"]}
    assert EvalCache.key(weights_identity(moved, fp), suite, "search", 8, 0, gen) == key
    changes = [
        (weights_identity({**recipe, "parameters": {"density": 0.6}}, fp), suite, "search", 8, 0, gen),
        (weights_identity({**recipe, "models": ["/c", "/a"]}, fp), suite, "search", 8, 0, gen),
        (weights_identity(recipe, {**fp, "/a": "changed"}), suite, "search", 8, 0, gen),
        (weights_identity(None, fp, checkpoint="/a"), suite, "search", 8, 0, gen),
        (weights_identity(recipe, fp), {**suite, "data": "humaneval"}, "search", 8, 0, gen),
        (weights_identity(recipe, fp), suite, "test", 8, 0, gen),
        (weights_identity(recipe, fp), suite, "search", 16, 0, gen),
        (weights_identity(recipe, fp), suite, "search", 8, 1, gen),
        (weights_identity(recipe, fp), suite, "search", 8, 0, {**gen, "dtype": "bfloat16"}),
    ]
    keys = {EvalCache.key(*c) for c in changes}
    assert key not in keys and len(keys) == len(changes)


def test_cache_key_changes_with_the_methods_numerics(monkeypatch):
    """Methods that give other tensors for the same recipe (a new NUMERICS_VERSION) never reuse old scores."""
    import evomerge.methods

    fp = {"/b": "fb", "/a": "fa"}
    recipe = {"base": "/b", "models": ["/a"], "method": "dare_ties", "parameters": {"density": 0.5}}
    args = ({"kind": "coding"}, "search", 8, 0, {"backend": "hf"})
    before = EvalCache.key(weights_identity(recipe, fp), *args)
    monkeypatch.setattr(evomerge.methods, "NUMERICS_VERSION", evomerge.methods.NUMERICS_VERSION + 1)
    assert EvalCache.key(weights_identity(recipe, fp), *args) != before
    # a reference checkpoint is scored as it is: its key does not depend on the methods
    assert weights_identity(None, fp, checkpoint="/a") == {"checkpoint": "fa"}


def test_cache_round_trip_and_damaged_entries(tmp_path):
    cache = EvalCache(tmp_path)
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"mean": 0.5, "items": []})
    assert cache.get("ab" * 32) == {"mean": 0.5, "items": []}
    (tmp_path / "evals" / "ab" / ("cd" * 32 + ".json")).write_text("{not json")
    assert cache.get("cd" * 32) is None  # recomputed, never trusted
    assert (cache.hits, cache.misses) == (1, 2)
    off = EvalCache(tmp_path, enabled=False)
    assert off.get("ab" * 32) is None
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "c"))
    assert EvalCache().dir == tmp_path / "c"


def test_run_directory_lifecycle(tmp_path):
    store = RunDir(tmp_path / "run")
    exp = experiment()
    with pytest.raises(ExperimentError, match="no run to resume"):
        store.check_resumable(exp)
    store.create(exp)
    with pytest.raises(ExperimentError, match="--resume"):
        store.create(exp)
    store.check_resumable(exp.model_copy(update={"budget": 20}))  # budget may grow
    with pytest.raises(ExperimentError, match=r"\['seed'\]"):
        store.check_resumable(experiment(seed=3))
    url = storage_url(tmp_path / "run")
    assert url.startswith("sqlite:///") and url.endswith("run/study.db")


def test_atomic_json_and_items(tmp_path):
    store = RunDir(tmp_path)
    rel = store.write_items("trial-00001", {"0": {"coding": {"mean": 1.0}}})
    assert rel == "items/trial-00001.json" and store.read_json(rel)["0"]["coding"]["mean"] == 1.0
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert not list(tmp_path.rglob(".*.tmp-*"))
