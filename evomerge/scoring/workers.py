"""Workers: where candidates are merged and scored (the pools that run them: evomerge.scoring.pools).

A `Worker` owns one device. It keeps the base and the task vectors resident (`ResidentMerger`) and
one generation engine resident (a `Generator` that is also `WeightSwappable`). For each job it merges
the recipe in memory, streams the merged tensors into the engine and runs the objective suites; it
never writes a checkpoint. Anything a candidate does wrong (an exception, non-finite weights or
scores, out of memory) comes back as a failed `EvalOutcome` with its reason.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from evomerge.errors import EvomergeError
from evomerge.scoring.outcomes import EvalJob, EvalOutcome, Producer

log = logging.getLogger(__name__)


class WorkerStartError(EvomergeError):
    """A worker could not load its models or suites; every other worker would fail the same way."""


@dataclass
class WorkerSetup:
    """Everything a worker needs, picklable (plain data and module-level callables)."""

    base: str | None
    models: list[str]
    suites: dict[str, dict[str, Any]]  # objective name -> SuiteConfig as a dict
    generator: dict[str, Any] = field(default_factory=lambda: {"backend": "hf", "dtype": None, "options": {}})
    # (name, SuiteConfig) -> Evaluator; default: evaluators.registry.build_suite
    suite_factory: Callable[[str, Any], Any] | None = None
    # (model_dir, device, generator settings dict) -> Generator + WeightSwappable; default: evaluators.registry.build_backend
    generator_factory: Callable[[str, str, Mapping[str, Any]], Any] | None = None
    threads: int | None = None  # torch threads per worker process (CPU)
    placement: str = "device"  # ResidentMerger's placement of the inputs
    # ResidentMerger's row-block bound (None: whole tensors; auto: by the worker's device); a search passes its
    # plan's bound, a sweep its experiment's workers.workspace_mib
    workspace_bytes: int | None | Literal["auto"] = None


def default_suite_factory(name: str, config: Any) -> Any:
    from evaluators.registry import build_suite

    return build_suite(config, name=name)


def default_generator_factory(model_dir: str, device: str, settings: Mapping[str, Any]) -> Any:
    from evaluators.registry import build_backend

    backend = settings.get("backend", "hf")
    options = dict(settings.get("options") or {})
    if backend in ("hf", "vllm"):
        options.setdefault("progress", False)  # the search's own bar counts candidates; one bar per generate is noise
    return build_backend(backend, model_dir, device=device, dtype=settings.get("dtype"), **options)


class CandidateError(Exception):
    """This candidate cannot be scored (non-finite weights or scores); the run goes on."""


class Worker:
    def __init__(self, setup: WorkerSetup, device: str = "cpu", name: str = "worker-0"):
        self.setup = setup
        self.device = device
        self.name = name
        self.merger = None
        self.generator = None
        self.suites: dict[str, Any] = {}
        self.previous_threads: int | None = None
        self.producers: dict[str, Producer] = {}  # suite -> what produces its scores on this worker

    def start(self) -> None:
        import torch

        from evaluators.suites.base import SuiteConfig
        from evomerge.heap import release_free_memory
        from evomerge.resident import ResidentMerger

        if self.setup.threads:
            self.previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.setup.threads)
        t0 = time.perf_counter()
        self.merger = ResidentMerger(self.setup.base, self.setup.models, device=self.device,
                                     placement=self.setup.placement, workspace_bytes=self.setup.workspace_bytes)
        # what loading freed stays in glibc's heaps for the worker's life otherwise (1.4-2.0 GiB after the 0.5B
        # inputs, at random): handed back before the engine loads, so the two do not add up at the start's peak
        release_free_memory()
        make_generator = self.setup.generator_factory or default_generator_factory
        self.generator = make_generator(self.setup.base or self.setup.models[0], self.device, self.setup.generator)
        if not hasattr(self.generator, "swap_weights"):
            raise WorkerStartError(f"generator {type(self.generator).__name__} cannot swap weights in place")
        make_suite = self.setup.suite_factory or default_suite_factory
        self.suites = {name: make_suite(name, SuiteConfig.model_validate(cfg)) for name, cfg in self.setup.suites.items()}
        self.producers = {name: describe_producer(self.setup.generator, self.generator, self.device, suite)
                          for name, suite in self.suites.items()}
        release_free_memory()  # and what the engine's load freed
        log.info("%s ready on %s in %.1f s", self.name, self.device, time.perf_counter() - t0)

    def run(self, job: EvalJob) -> EvalOutcome:
        if self.merger is None:
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - reported to the runner, which stops the run
                log.debug("worker start failed", exc_info=True)
                return EvalOutcome(job.key, False, f"worker could not start: {type(exc).__name__}: {exc}",
                                   worker=self.name, fatal=True)
        clock = Stopwatch()
        try:
            weights = self._weights(job)
            if not getattr(self.generator, "checks_finite_weights", False):
                # an engine that checks each tensor itself (vLLM) is not checked twice: ~0.6 s per 0.5B swap
                weights = _finite(weights)
            self.generator.swap_weights(clock.merging(weights))
            clock.swapped()
            results = {}
            for suite in job.suites:
                result = self.suites[suite].evaluate(self.generator, split=job.split, limit=job.limit, seed=job.seed)
                if not math.isfinite(result.mean):
                    raise CandidateError(f"suite '{suite}' scored {result.mean} on {result.n} items")
                results[suite] = result.to_dict()
            return EvalOutcome(job.key, True, "ok", results, worker=self.name,
                               producers={suite: self.producers[suite] for suite in results}, **clock.seconds())
        except CandidateError as exc:
            return EvalOutcome(job.key, False, str(exc), worker=self.name, **clock.seconds())
        except BaseException as exc:  # noqa: BLE001 - any failure of one candidate is recorded, the run goes on
            if isinstance(exc, KeyboardInterrupt):
                raise
            reason = _failure_reason(exc)
            log.debug("job %s failed:\n%s", job.key, traceback.format_exc())
            _release_memory()
            return EvalOutcome(job.key, False, reason, worker=self.name, **clock.seconds())

    def _weights(self, job: EvalJob) -> Iterable[tuple[str, Any]]:
        if job.checkpoint is not None:
            return _checkpoint_tensors(job.checkpoint, self.device)
        from evomerge.recipe import MergeRecipe

        return self.merger.merge(MergeRecipe.from_dict(job.recipe, where=f"job {job.key}"))


def backend_version(backend: str) -> str:
    """The installed version of the package behind a generation backend (hf: transformers)."""
    package = {"hf": "transformers"}.get(backend, backend)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def describe_producer(settings: Mapping[str, Any], generator: Any, device: str, suite: Any) -> Producer:
    """What produces one suite's scores on this worker. The engine's own dtype wins over the requested one
    (None means a device default); the sandbox mode is the one a code-running suite resolved here."""
    backend = str(settings.get("backend", "hf"))
    dtype = getattr(generator, "dtype", None) or settings.get("dtype") or "unknown"
    box = getattr(suite, "sandbox", None)  # the coding suite's Sandbox (built once per process)
    sandbox = str(box.isolation) if box is not None and getattr(box, "isolation", None) else None
    return Producer(backend, backend_version(backend), str(dtype).removeprefix("torch."), str(device), sandbox)


class Stopwatch:
    """One job's merge, swap and evaluation seconds (EvalOutcome's fields). The phases are disjoint: the merge
    is the time spent inside the merged-tensor iterator, the swap the rest of `swap_weights`, the evaluation
    everything after it; a job that fails mid-way reports the phases it reached."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.merged: Timed | None = None
        self.swap_end: float | None = None

    def merging(self, items: Iterable[Any]) -> "Timed":
        self.merged = Timed(items)
        return self.merged

    def swapped(self) -> None:
        self.swap_end = time.perf_counter()

    def seconds(self) -> dict[str, float]:
        now = time.perf_counter()
        merge = self.merged.seconds if self.merged is not None else 0.0
        swap_end = self.swap_end if self.swap_end is not None else now
        return {"merge_seconds": merge, "swap_seconds": max(0.0, swap_end - self.start - merge),
                "eval_seconds": now - self.swap_end if self.swap_end is not None else 0.0}


class Timed:
    """An iterator that adds up the wall time spent producing its items. The merge is streamed: the engine's
    `swap_weights` pulls each merged tensor and copies it in before it asks for the next, so the time spent
    inside this iterator is the merge (and its finiteness check) and the rest of `swap_weights` is the swap."""

    def __init__(self, items: Iterable[Any]):
        self._items = iter(items)
        self.seconds = 0.0

    def __iter__(self) -> "Timed":
        return self

    def __next__(self) -> Any:
        t0 = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - t0


def _finite(weights: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Pass tensors through, failing the candidate at the first non-finite value (a merge gone wrong)."""
    from evomerge.io.reader import all_finite  # exponent-bit test: ~5x faster than isfinite().all() on bf16 CPU

    for name, tensor in weights:
        if not all_finite(tensor):
            raise CandidateError(f"merged tensor '{name}' has NaN or infinite values")
        yield name, tensor


def _checkpoint_tensors(path: str, device: str) -> Iterator[tuple[str, Any]]:
    """A checkpoint's own tensors (a reference model), through the checkpoint reader and its checks
    (byte order, finiteness, the header's bounds)."""
    from evomerge.checkpoint import Checkpoint, CheckpointSet

    ckpt = Checkpoint.open(path)
    with CheckpointSet(ckpt, []) as reader:
        for name in ckpt.tensors:
            yield name, reader.read(ckpt, name, device)


def _failure_reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text[:500]}"
    return text[:1000]


def _release_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort after a failure
        pass
