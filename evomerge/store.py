"""Deprecated path, kept importable for one release. What lived here is now split by what it holds:

- the run directory: `evomerge.rundir.RunDir`; the search's Optuna storage: `evomerge.search.storage`;
- the evaluation cache and its keys: `evomerge.scoring.cache`;
- atomic writers and canonical JSON: `evomerge.io.atomic`.
"""

from __future__ import annotations

from pathlib import Path

from evomerge.io.atomic import canonical_json, write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: F401
from evomerge.rundir import RESUMABLE_CHANGES, RunDir  # noqa: F401
from evomerge.scoring.cache import CACHE_FORMAT, EvalCache, default_cache_dir, weights_identity  # noqa: F401
from evomerge.search.storage import STUDY_NAME, open_storage, open_study, storage_url, stored_trials, study_name  # noqa: F401


class RunStore(RunDir):
    """A search run directory and its Optuna study (`evomerge.rundir.RunDir` + `evomerge.search.storage`)."""

    def __init__(self, run_dir: str | Path, storage: str | None = None):
        super().__init__(run_dir)
        self.storage_url = storage_url(run_dir, storage)

    def storage(self):
        return open_storage(self.storage_url)

    def study(self, sampler, n_objectives: int):
        return open_study(self.storage_url, study_name(self.dir), sampler, n_objectives)

    def existing_trials(self) -> int:
        return len(stored_trials(self.storage_url, study_name(self.dir)))
