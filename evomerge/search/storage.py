"""The Optuna storage that holds a search's state (SQLite in the run directory unless a URL is given)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.storage_checks import check_sqlite_file

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "evomerge"


def storage_url(run_dir: str | Path, storage: str | None = None) -> str:
    """The run's storage URL; an existing SQLite file must be a sound database (one error naming it)."""
    url = storage or f"sqlite:///{(Path(run_dir) / 'study.db').resolve()}"
    if url.startswith("sqlite:///"):
        check_sqlite_file(url[len("sqlite:///"):])
    return url


def open_storage(url: str) -> "optuna.storages.BaseStorage | str":
    """The Optuna storage. SQLite runs in WAL mode with `synchronous=NORMAL`: every commit survives a
    killed process (only a power cut could lose the last ones), and a commit costs no fsync, which
    matters because Optuna commits once per suggested gene."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not url.startswith("sqlite:///"):
        return url
    path = url[len("sqlite:///"):]

    def connect():
        import sqlite3

        con = sqlite3.connect(path, check_same_thread=False, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    return optuna.storages.RDBStorage(url, engine_kwargs={"creator": connect})


def open_study(url: str, sampler: "optuna.samplers.BaseSampler", n_objectives: int) -> "optuna.Study":
    import optuna

    return optuna.create_study(storage=open_storage(url), study_name=STUDY_NAME, sampler=sampler,
                               directions=["maximize"] * n_objectives, load_if_exists=True)


def stored_trials(url: str) -> list["optuna.trial.FrozenTrial"]:
    """Every trial of the run's study (none when the study was never created)."""
    import optuna

    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=open_storage(url)).get_trials(deepcopy=False)
    except KeyError:
        return []
