"""What the search and the sweep share to score weights: one `Scoring` per run.

It holds the suites and generator settings, the seed, the checkpoints' content fingerprints, the
evaluation cache and the workers' settings, and opens what scores: a pool of workers holding a base
and its models, behind the cached job queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from evomerge.memory_plan import mib_to_bytes
from evomerge.scoring.cache import EvalCache, fingerprints
from evomerge.scoring.pools import Pool, build_pool
from evomerge.scoring.queue import CachedJobs
from evomerge.scoring.workers import WorkerSetup


def reference_models(base: str | None, models: Mapping[str, str]) -> dict[str, str]:
    """Name -> checkpoint of the models scored as they are: the base (if any), then every model."""
    refs = {"base": base} if base else {}
    refs.update(models)
    return refs


@dataclass
class Scoring:
    suites: dict[str, dict[str, Any]]  # objective name -> SuiteConfig as a dict
    generator: dict[str, Any]  # generator settings as a dict
    seed: int
    fingerprints: dict[str, str]  # checkpoint path -> content fingerprint
    cache: EvalCache
    workers: Any  # the experiment's `Workers` settings
    suite_factory: Callable | None = None
    generator_factory: Callable | None = None

    @classmethod
    def for_experiment(cls, exp: Any, checkpoints: Sequence[str], *, suite_factory: Callable | None = None,
                       generator_factory: Callable | None = None) -> "Scoring":
        """`exp`: a search `Experiment` or a `SweepExperiment` (both carry objectives, generator, workers,
        cache and seed); `checkpoints`: every checkpoint a job may name (opened here: errors come early)."""
        return cls({n: o.suite.model_dump(mode="json") for n, o in exp.objectives.items()},
                   exp.generator.model_dump(mode="json"), exp.seed, fingerprints(checkpoints),
                   EvalCache(exp.cache.dir, exp.cache.enabled), exp.workers, suite_factory, generator_factory)

    def worker_setup(self, base: str | None, models: Sequence[str]) -> WorkerSetup:
        return WorkerSetup(base=base, models=list(models), suites=self.suites, generator=self.generator,
                           suite_factory=self.suite_factory, generator_factory=self.generator_factory,
                           threads=self.workers.threads,
                           # auto is resolved by a search's memory plan (evomerge.worker_plan); a sweep
                           # does not plan yet: device, as before
                           placement="device" if self.workers.placement == "auto" else self.workers.placement,
                           workspace_bytes=mib_to_bytes(self.workers.workspace_mib))

    def open_pool(self, setup: WorkerSetup) -> Pool:
        w = self.workers
        kind = "ray" if w.ray_address else w.kind
        return build_pool(kind, setup, w.count, w.devices, w.ray_address, w.cpus_per_worker, w.gpus_per_worker)

    def queue(self, pool: Pool) -> CachedJobs:
        return CachedJobs(pool, self.cache, self.suites, self.seed, self.generator, self.fingerprints)
