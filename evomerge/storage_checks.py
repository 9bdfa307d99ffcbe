"""Checks of a run directory and its SQLite study before anything is opened or written.

Without them a `--out` that names a file ended in FileExistsError from mkdir, and a study.db that is
not an SQLite database (or is truncated or corrupt) ended in a traceback from SQLAlchemy, deep in
Optuna, after the run directory had been written to. Each now gets one error naming the path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evomerge.errors import ExperimentError

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file


def check_run_dir(run_dir: str | Path) -> None:
    """A run directory must be a directory, or not exist yet."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"{path}: exists and is not a directory; --out names the run directory")


def check_sqlite_file(path: str | Path) -> None:
    """An existing SQLite study file must be a readable, uncorrupted SQLite database. A missing or empty
    file is fine (SQLite creates the database); a database that another process holds locked is left
    to SQLite's own waiting."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise ExperimentError(f"{path}: is a directory, not an SQLite database (the run's Optuna storage)")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the run's Optuna storage: {exc.strerror}") from None
    if not head:
        return
    if head != SQLITE_MAGIC:
        raise ExperimentError(f"{path}: not an SQLite database (the run's Optuna storage); "
                              "move it away or choose another --out")
    try:
        # read-only, so that the check itself never creates or changes anything
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            verdict = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # e.g. locked, or no -shm beside a WAL database in a read-only folder
        return
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        verdict = str(exc)
    if verdict != "ok":
        raise ExperimentError(f"{path}: the run's Optuna storage (SQLite) is corrupt: {verdict}")
