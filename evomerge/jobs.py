"""Deprecated path: the cached job queue lives in `evomerge.scoring.queue`. Kept importable for one release."""

from evomerge.scoring.queue import CachedJobs  # noqa: F401
