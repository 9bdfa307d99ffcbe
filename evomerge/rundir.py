"""A run directory (search or sweep): the validated experiment it started with, per-item results, CSVs.

Every JSON/CSV file is written to a temporary sibling and renamed into place (evomerge.io.atomic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from evomerge.io.atomic import append_csv_row, write_csv_atomic, write_json_atomic, write_text_atomic
from evomerge.errors import ExperimentError
from evomerge.storage_checks import check_run_dir
from evomerge.yamlio import load_yaml

LOCK_FILE = "run.lock"  # held (flock) by the one process working in the run directory; holds its pid

# Experiment fields a resumed search may change; anything else must match the stored experiment.
RESUMABLE_CHANGES = ("budget", "workers", "cache", "heldout", "storage")


class RunDir:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        check_run_dir(self.dir)  # before anything is created or opened: one error naming the path

    @property
    def experiment_file(self) -> Path:
        return self.dir / "experiment.yaml"

    items_dir = property(lambda self: self.dir / "items")

    def exists(self) -> bool:
        return self.experiment_file.is_file()

    # -- lifecycle -------------------------------------------------------------------------------
    def lock(self) -> "RunLock":
        """Hold the run directory for this process (created if missing): a second process working in it
        (a second `--resume` of a running run) would score the first one's running trials again."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return RunLock.acquire(self.dir / LOCK_FILE)

    def create(self, experiment: Any) -> None:
        """`experiment`: a validated experiment (anything with `to_dict()`), stored as experiment.yaml."""
        if self.exists():
            raise ExperimentError(f"{self.dir}: a run already lives here; add --resume to continue it or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.experiment_file, yaml.safe_dump(experiment.to_dict(), sort_keys=False))

    def stored_experiment(self) -> dict[str, Any]:
        """The experiment this run started with (experiment.yaml, as `to_dict` wrote it)."""
        stored = load_yaml(self.experiment_file.read_text())
        return stored if isinstance(stored, dict) else {}

    def check_resumable(self, experiment: Any, changeable: Sequence[str] = RESUMABLE_CHANGES) -> None:
        """A resumed run must search the same thing; only the `changeable` fields (by default budget, workers,
        cache, held-out and storage) may differ."""
        if not self.exists():
            raise ExperimentError(f"{self.dir}: no run to resume here (experiment.yaml is missing); drop --resume to start one")
        stored = self.stored_experiment()
        now = experiment.to_dict()
        changed = sorted(k for k in set(stored) | set(now) if k not in changeable and stored.get(k) != now.get(k))
        if changed:
            raise ExperimentError(
                f"{self.dir}: cannot resume: the experiment differs from the one this run started with in {changed} "
                f"(only {list(changeable)} may change); start a new run with another --out"
            )
        write_text_atomic(self.experiment_file, yaml.safe_dump(now, sort_keys=False))

    # -- files -----------------------------------------------------------------------------------
    def write_items(self, name: str, data: Mapping[str, Any]) -> str:
        """Per-item results of one trial (or reference, or held-out evaluation); returns the relative path."""
        path = self.items_dir / f"{name}.json"
        write_json_atomic(path, data)
        return str(path.relative_to(self.dir))

    def read_json(self, rel: str) -> Any:
        return json.loads((self.dir / rel).read_text())

    def rewrite_csv(self, path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        write_csv_atomic(path, header, rows)

    def append_csv(self, path: Path, row: Sequence[Any]) -> None:
        append_csv_row(path, row)


class RunLock:
    """An exclusive `flock` on the run directory's lock file, held until `release()` or the process ends
    (the kernel drops it when the process dies, kill -9 included, so a stale file never blocks a resume)."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, path: Path) -> "RunLock":
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ExperimentError(f"{path.parent}: another evomerge process (pid {holder}) is running this run; "
                                  f"wait for it to end or stop it before resuming") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
