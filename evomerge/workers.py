"""Deprecated path: workers and pools live in `evomerge.scoring` (workers, pools, outcomes).

Kept importable for one release; import from `evomerge.scoring.workers` / `evomerge.scoring.pools`.
"""

from evomerge.scoring.outcomes import EvalJob, EvalOutcome, JobKey, Producer  # noqa: F401
from evomerge.scoring.pools import InlinePool, LocalPool, Pool, RayPool, RayWorker, build_pool, default_devices  # noqa: F401
from evomerge.scoring.workers import (  # noqa: F401
    CandidateError, Worker, WorkerSetup, WorkerStartError, default_generator_factory, default_suite_factory,
)
