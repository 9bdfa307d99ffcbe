"""The cached job queue: evaluation jobs in front of a worker pool, through the evaluation cache.

The one way the search and the sweep score weights. A job names the weights (a recipe, or a
checkpoint as it is), the suites and the data slice. Suites whose result is cached are not run; the
others go to the pool as one `EvalJob`, and their fresh results are cached as they arrive. An
outcome always carries every suite the job asked for (cached and fresh together), and for each
suite what produced it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from evomerge.scoring.cache import EvalCache, weights_identity
from evomerge.scoring.outcomes import EvalJob, EvalOutcome, JobKey, Producer
from evomerge.scoring.pools import Pool


@dataclass
class _Pending:
    cached: dict[str, dict[str, Any]]  # suite -> result answered by the cache
    producers: dict[str, Producer | None]  # of the cached results
    keys: dict[str, str]  # suite -> cache key, for the suites the pool scores


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
        self._queue: deque[tuple[EvalJob, _Pending]] = deque()
        self._ready: list[EvalOutcome] = []
        self._in_pool: dict[JobKey, _Pending] = {}

    def enqueue(self, key: JobKey, *, recipe: dict | None = None, checkpoint: str | None = None,
                split: str | None, limit: int | None, suites: Sequence[str] | None = None) -> None:
        """Queue one job; `split`/`limit` None: each suite's configured value; `suites` None: every suite."""
        identity = weights_identity(recipe, self.fingerprints, checkpoint)
        pending = _Pending({}, {}, {})
        for name in (self.suites if suites is None else suites):
            cfg = self.suites[name]
            k = self.cache.key(identity, cfg, split or cfg["split"], limit if limit is not None else cfg["limit"],
                               self.seed, self.generator)
            hit = self.cache.get_with_producer(k)
            if hit is not None:
                pending.cached[name], pending.producers[name] = hit
            else:
                pending.keys[name] = k
        if not pending.keys:
            self._ready.append(EvalOutcome(key, True, "cached", pending.cached, worker="cache",
                                           producers=pending.producers))
            return
        job = EvalJob(key, tuple(pending.keys), split, limit, self.seed, recipe, checkpoint)
        self._queue.append((job, pending))

    def waiting(self) -> int:
        """Jobs queued or answered from the cache but not yet handed out by `next_outcomes`."""
        return len(self._queue) + len(self._ready)

    def next_outcomes(self) -> list[EvalOutcome]:
        """Fill free workers, then return what finished (cache answers first); [] when nothing is left."""
        while self._queue and self.pool.free_slots() > 0:
            job, pending = self._queue.popleft()
            self._in_pool[job.key] = pending
            self.pool.submit(job)
        if self._ready:
            out, self._ready = self._ready, []
            return out
        if self.pool.in_flight() == 0:
            return []
        out = []
        for outcome in self.pool.wait():
            pending = self._in_pool.pop(outcome.key)
            if outcome.ok:
                for suite, k in pending.keys.items():
                    self.cache.put(k, outcome.results[suite], outcome.producers.get(suite))
                outcome.results = {**pending.cached, **outcome.results}
                outcome.producers = {**pending.producers, **outcome.producers}
            out.append(outcome)
        return out

    def drain(self) -> list[EvalOutcome]:
        """Run every queued job to completion; outcomes in completion order."""
        out = []
        while self._queue or self._ready or self.pool.in_flight():
            out.extend(self.next_outcomes())
        return out
