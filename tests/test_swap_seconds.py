"""A worker reports merge, swap and evaluation seconds apart (EvalOutcome.swap_seconds), the search records
them per trial (trials.csv's swap_seconds column), and trials recorded before the column existed still read."""

import csv
import time
from types import SimpleNamespace

import optuna
import pytest

from evaluators.protocol import ItemResult, SuiteResult
from evomerge.scoring.outcomes import EvalJob, JobKey, Producer
from evomerge.scoring.workers import Worker, WorkerSetup
from evomerge.search.record import trial_header, trial_row

TENSORS = 3
MERGE_SLEEP = 0.1  # per merged tensor: 0.3 s of merging
SWAP_SLEEP = 0.3  # per tensor copied into the engine: 0.9 s of swapping
EVAL_SLEEP = 0.5


class SlowMerger:
    def merge(self, recipe):
        for i in range(TENSORS):
            time.sleep(MERGE_SLEEP)
            yield f"t{i}", _tensor()


def _tensor():
    import torch

    return torch.zeros(2)


class SlowEngine:
    def __init__(self):
        self.received = []

    def swap_weights(self, weights):
        for name, tensor in weights:  # pulls each merged tensor, then copies it in
            time.sleep(SWAP_SLEEP)
            self.received.append(name)
        return len(self.received)


class SlowSuite:
    def __init__(self, fail=False):
        self.fail = fail

    def evaluate(self, generator, split=None, limit=None, seed=0):
        time.sleep(EVAL_SLEEP)
        if self.fail:
            raise RuntimeError("suite broke")
        return SuiteResult.from_items("s", [ItemResult("0", 1.0, True, "ok")])


def _worker(fail=False) -> Worker:
    worker = Worker(WorkerSetup(base=None, models=[], suites={}), name="w")
    worker.merger, worker.generator = SlowMerger(), SlowEngine()  # started: the job goes straight to the merge
    worker.suites = {"s": SlowSuite(fail)}
    worker.producers = {"s": Producer("fake", "0", "float32", "cpu")}
    return worker


def _job() -> EvalJob:
    recipe = {"method": "task_arithmetic", "base": "b", "models": ["m1", "m2"], "parameters": {"weight": 0.5}}
    return EvalJob(JobKey.trial(0, 0), ("s",), None, None, 0, recipe)


def test_merge_swap_and_evaluation_are_timed_apart():
    worker = _worker()
    t0 = time.perf_counter()
    out = worker.run(_job())
    wall = time.perf_counter() - t0
    assert out.ok, out.reason
    assert worker.generator.received == ["t0", "t1", "t2"]
    merge, swap = TENSORS * MERGE_SLEEP, TENSORS * SWAP_SLEEP
    # each phase at least its sleeps and well short of the next larger one (a phase counted twice fails here)
    assert merge <= out.merge_seconds < swap
    assert swap <= out.swap_seconds < swap + merge
    assert EVAL_SLEEP <= out.eval_seconds < swap
    assert out.merge_seconds + out.swap_seconds + out.eval_seconds <= wall


def test_a_failure_during_evaluation_keeps_the_merge_and_swap_times():
    out = _worker(fail=True).run(_job())
    assert not out.ok and "suite broke" in out.reason
    assert out.merge_seconds >= TENSORS * MERGE_SLEEP
    assert out.swap_seconds >= TENSORS * SWAP_SLEEP
    assert out.eval_seconds >= EVAL_SLEEP


def _frozen(result):
    return optuna.trial.create_trial(values=[1.0], params={}, distributions={}, user_attrs={"result": result})


def test_trials_csv_has_swap_seconds_and_reads_rows_recorded_without_it():
    exp = SimpleNamespace(objective_names=["s"])
    header = trial_header(exp, [])
    assert header.index("swap_seconds") == header.index("merge_seconds") + 1
    new = dict(zip(header, trial_row(_frozen({"merge_seconds": 1.5, "swap_seconds": 0.25, "eval_seconds": 3.0}),
                                     exp, [])))
    assert (new["merge_seconds"], new["swap_seconds"], new["eval_seconds"]) == ("1.5", "0.25", "3")
    old = dict(zip(header, trial_row(_frozen({"merge_seconds": 1.5, "eval_seconds": 3.0}), exp, [])))
    assert old["swap_seconds"] == "" and old["merge_seconds"] == "1.5" and old["eval_seconds"] == "3"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_search_records_swap_seconds_per_trial(tiny_family, tmp_path):
    import search_helpers as sh

    from evomerge.search.experiment import Experiment
    from evomerge.search.loop import run_search

    exp = Experiment.from_dict(sh.experiment_dict(tiny_family, tmp_path, budget=2, references=False,
                                                  heldout={"enabled": False}))
    run_search(exp, tmp_path / "run", suite_factory=sh.suite_factory, progress=False, report=False)
    with open(tmp_path / "run" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for row in rows:  # the hf engine's swap of the tiny model takes real time, apart from the merge
        assert float(row["merge_seconds"]) > 0 and float(row["swap_seconds"]) > 0 and float(row["eval_seconds"]) > 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_merged_tensor_fails_the_candidate(dtype, bad):
    import torch

    class BadMerger:
        def merge(self, recipe):
            good = torch.full((3, 4), 65504.0 if dtype == "float16" else 3e38,
                              dtype=getattr(torch, dtype))  # the largest finite values pass
            yield "good", good
            broken = torch.zeros(3, 4, dtype=getattr(torch, dtype))
            broken[2, 1] = bad
            yield "broken", broken[1:]  # a view with an offset, as a row block is

    worker = _worker()
    worker.merger = BadMerger()
    out = worker.run(_job())
    assert not out.ok and out.reason == "merged tensor 'broken' has NaN or infinite values"
    assert worker.generator.received == ["good"]


def test_an_engine_that_checks_its_weights_is_not_checked_twice(monkeypatch):
    """An engine declaring `checks_finite_weights` (vLLM's swap refuses NaN/inf itself) gets the merged tensors
    unchecked by the worker, and its own refusal fails the candidate; other engines keep the worker's check."""
    import torch

    import evomerge.io.reader as reader

    calls = []
    real = reader.all_finite
    monkeypatch.setattr(reader, "all_finite", lambda t: calls.append(1) or real(t))

    class CheckingEngine(SlowEngine):
        checks_finite_weights = True

        def swap_weights(self, weights):
            for name, tensor in weights:
                if not torch.isfinite(tensor).all():
                    raise RuntimeError(f"swap_weights: {name!r} has NaN or infinite values")
                self.received.append(name)

    worker = _worker()
    worker.run(_job())
    assert len(calls) == TENSORS  # the worker checked every tensor for an engine that does not
    calls.clear()
    worker.generator = CheckingEngine()
    assert worker.run(_job()).ok and calls == []
    worker.merger = type("NaNMerger", (), {"merge": lambda self, recipe: iter([("w", torch.tensor([float("nan")]))])})()
    out = worker.run(_job())
    assert not out.ok and "has NaN or infinite values" in out.reason
