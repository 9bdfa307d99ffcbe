"""Evaluation jobs in front of a worker pool, through the evaluation cache.

The one way the search and the sweep score weights. A job names the weights (a recipe, or a
checkpoint as it is), the suites and the data slice. Suites whose result is cached are not run; the
others go to the pool as one `EvalJob`, and their fresh results are cached as they arrive. An
outcome always carries every suite the job asked for (cached and fresh together).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

from evomerge.store import EvalCache, weights_identity
from evomerge.workers import EvalJob, EvalOutcome, Pool


class CachedJobs:
    """`suites`: objective name -> SuiteConfig as a dict (as in WorkerSetup); `fingerprints`: checkpoint
    path -> content fingerprint (the cache key names contents, not paths)."""

    def __init__(self, pool: Pool, cache: EvalCache, suites: Mapping[str, Mapping[str, Any]], seed: int,
                 generator: Mapping[str, Any], fingerprints: Mapping[str, str]):
        self.pool = pool
        self.cache = cache
        self.suites = dict(suites)
        self.seed = seed
        self.generator = dict(generator)
        self.fingerprints = dict(fingerprints)
        self._queue: deque[tuple[EvalJob, dict[str, Any], dict[str, str]]] = deque()
        self._ready: list[EvalOutcome] = []
        self._in_pool: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}

    def enqueue(self, key: str, *, recipe: dict | None = None, checkpoint: str | None = None,
                split: str | None, limit: int | None, suites: Sequence[str] | None = None) -> None:
        """Queue one job; `split`/`limit` None: each suite's configured value; `suites` None: every suite."""
        identity = weights_identity(recipe, self.fingerprints, checkpoint)
        cached, keys = {}, {}
        for name in (self.suites if suites is None else suites):
            cfg = self.suites[name]
            k = self.cache.key(identity, cfg, split or cfg["split"], limit if limit is not None else cfg["limit"],
                               self.seed, self.generator)
            hit = self.cache.get(k)
            if hit is not None:
                cached[name] = hit
            else:
                keys[name] = k
        if not keys:
            self._ready.append(EvalOutcome(key, True, "cached", cached, worker="cache"))
            return
        job = EvalJob(key, tuple(keys), split, limit, self.seed, recipe, checkpoint)
        self._queue.append((job, cached, keys))

    def waiting(self) -> int:
        """Jobs queued or answered from the cache but not yet handed out by `next_outcomes`."""
        return len(self._queue) + len(self._ready)

    def next_outcomes(self) -> list[EvalOutcome]:
        """Fill free workers, then return what finished (cache answers first); [] when nothing is left."""
        while self._queue and self.pool.free_slots() > 0:
            job, cached, keys = self._queue.popleft()
            self._in_pool[job.key] = (cached, keys)
            self.pool.submit(job)
        if self._ready:
            out, self._ready = self._ready, []
            return out
        if self.pool.in_flight() == 0:
            return []
        out = []
        for outcome in self.pool.wait():
            cached, keys = self._in_pool.pop(outcome.key)
            if outcome.ok:
                for suite, k in keys.items():
                    self.cache.put(k, outcome.results[suite])
                outcome.results = {**cached, **outcome.results}
            out.append(outcome)
        return out

    def drain(self) -> list[EvalOutcome]:
        """Run every queued job to completion; outcomes in completion order."""
        out = []
        while self._queue or self._ready or self.pool.in_flight():
            out.extend(self.next_outcomes())
        return out
