"""The Optuna storage that holds a search's state (SQLite in the run directory unless a URL is given)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.storage_checks import check_sqlite_file

if TYPE_CHECKING:
    import optuna

# The study name of runs created before each run owned its study (no run.json): they resume under it.
STUDY_NAME = "evomerge"
RUN_JSON = "run.json"  # in the run directory: {"study": <this run's study name>}


def new_study_name(experiment_name: str) -> str:
    """A study name of its own for a new run: the experiment's name (what optuna-dashboard lists) and a
    short random id, so two runs of one experiment sharing a storage URL never share trials."""
    import uuid

    return f"{experiment_name}-{uuid.uuid4().hex[:8]}"


def write_study_name(run_dir: str | Path, name: str) -> None:
    from evomerge.io.atomic import write_json_atomic

    write_json_atomic(Path(run_dir) / RUN_JSON, {"study": name})


def study_name(run_dir: str | Path) -> str:
    """The study name recorded in the run directory; `STUDY_NAME` for a run created before names were recorded."""
    import json

    from evomerge.errors import ExperimentError

    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return STUDY_NAME
    try:
        name = json.loads(path.read_text())["study"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable run record (expected {{\"study\": NAME}}): {exc}") from None
    if not isinstance(name, str) or not name:
        raise ExperimentError(f"{path}: 'study' must be a non-empty string, got {name!r}")
    return name


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


def open_study(url: str, name: str, sampler: "optuna.samplers.BaseSampler", n_objectives: int,
               metric_names: "list[str] | None" = None) -> "optuna.Study":
    """The run's study `name` (created when missing). `metric_names`, in objective order (cost last), name
    the values in optuna-dashboard; every value is maximised (minimised objectives are stored negated)."""
    import optuna

    study = optuna.create_study(storage=open_storage(url), study_name=name, sampler=sampler,
                                directions=["maximize"] * n_objectives, load_if_exists=True)
    if metric_names is not None and study.metric_names != list(metric_names):
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 3.2 and stable in use: not the user's concern
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study


def stored_trials(url: str, name: str) -> list["optuna.trial.FrozenTrial"]:
    """Every trial of the study `name` (none when the study was never created)."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    except KeyError:
        return []
