"""The run directory, the Optuna storage that holds the search state, and the cross-run evaluation cache.

RUN_DIR/
  experiment.yaml     the experiment as validated (a resumed run must match it)
  study.db            Optuna storage (SQLite) unless the experiment names another SQLAlchemy URL
  references.json     scores of the base and of each model (reference point, constraints, report)
  items/              per-item results, one JSON file per trial (too large for the storage)
  trials.csv          one row per finished trial, appended as each finishes
  hypervolume.csv     hypervolume and front size after every finished trial
  front.json          the Pareto front: trial, scores with standard errors, held-out scores, recipe
  report.html, *.png  see evomerge.report

Every JSON/CSV file is written to a temporary sibling and renamed into place; the CSVs are rebuilt
from the storage when a run resumes, so a crash between the storage and a CSV loses nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import yaml

from evomerge.yamlio import load_yaml
from evomerge.errors import ExperimentError
from evomerge.storage_checks import check_run_dir, check_sqlite_file

if TYPE_CHECKING:
    import optuna

    from evomerge.experiment import Experiment

log = logging.getLogger(__name__)

STUDY_NAME = "evomerge"
CACHE_FORMAT = 2  # bump when a cached entry's layout or meaning changes (2: suite results name their scoring;
#   tool_use lenient relevance / irrelevance and the memory F1 were corrected)
# Experiment fields a resumed run may change; anything else must match the stored experiment.
RESUMABLE_CHANGES = ("budget", "workers", "cache", "heldout", "storage")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)


class RunStore:
    """A run directory and its Optuna study."""

    def __init__(self, run_dir: str | Path, storage: str | None = None):
        self.dir = Path(run_dir)
        self.storage_url = storage or f"sqlite:///{(self.dir / 'study.db').resolve()}"
        check_run_dir(self.dir)  # before anything is created or opened: one error naming the path
        if self.storage_url.startswith("sqlite:///"):
            check_sqlite_file(self.storage_url[len("sqlite:///"):])

    # -- paths -----------------------------------------------------------------------------------
    @property
    def experiment_file(self) -> Path:
        return self.dir / "experiment.yaml"

    trials_csv = property(lambda self: self.dir / "trials.csv")
    hypervolume_csv = property(lambda self: self.dir / "hypervolume.csv")
    front_json = property(lambda self: self.dir / "front.json")
    references_json = property(lambda self: self.dir / "references.json")
    report_html = property(lambda self: self.dir / "report.html")
    items_dir = property(lambda self: self.dir / "items")

    def exists(self) -> bool:
        return self.experiment_file.is_file()

    # -- lifecycle -------------------------------------------------------------------------------
    def create(self, experiment: "Experiment") -> None:
        if self.exists():
            raise ExperimentError(f"{self.dir}: a run already lives here; add --resume to continue it or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.experiment_file, yaml.safe_dump(experiment.to_dict(), sort_keys=False))

    def check_resumable(self, experiment: "Experiment", changeable: Sequence[str] = RESUMABLE_CHANGES) -> None:
        """A resumed run must search the same thing; only the `changeable` fields (by default budget, workers,
        cache, held-out and storage) may differ."""
        if not self.exists():
            raise ExperimentError(f"{self.dir}: no run to resume here (experiment.yaml is missing); drop --resume to start one")
        stored = load_yaml(self.experiment_file.read_text())
        now = experiment.to_dict()
        changed = sorted(k for k in set(stored) | set(now) if k not in changeable and stored.get(k) != now.get(k))
        if changed:
            raise ExperimentError(
                f"{self.dir}: cannot resume: the experiment differs from the one this run started with in {changed} "
                f"(only {list(changeable)} may change); start a new run with another --out"
            )
        write_text_atomic(self.experiment_file, yaml.safe_dump(now, sort_keys=False))

    def storage(self) -> "optuna.storages.BaseStorage | str":
        """The Optuna storage. SQLite runs in WAL mode with `synchronous=NORMAL`: every commit survives a
        killed process (only a power cut could lose the last ones), and a commit costs no fsync, which
        matters because Optuna commits once per suggested gene."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not self.storage_url.startswith("sqlite:///"):
            return self.storage_url
        path = self.storage_url[len("sqlite:///"):]

        def connect():
            import sqlite3

            con = sqlite3.connect(path, check_same_thread=False, timeout=60)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            return con

        return optuna.storages.RDBStorage(self.storage_url, engine_kwargs={"creator": connect})

    def study(self, sampler: "optuna.samplers.BaseSampler", n_objectives: int) -> "optuna.Study":
        import optuna

        return optuna.create_study(storage=self.storage(), study_name=STUDY_NAME, sampler=sampler,
                                   directions=["maximize"] * n_objectives, load_if_exists=True)

    def existing_trials(self) -> int:
        import optuna

        try:
            return len(optuna.load_study(study_name=STUDY_NAME, storage=self.storage()).trials)
        except KeyError:
            return 0

    # -- files -----------------------------------------------------------------------------------
    def write_items(self, name: str, data: Mapping[str, Any]) -> str:
        """Per-item results of one trial (or reference, or held-out evaluation); returns the relative path."""
        path = self.items_dir / f"{name}.json"
        write_json_atomic(path, data)
        return str(path.relative_to(self.dir))

    def read_json(self, rel: str) -> Any:
        return json.loads((self.dir / rel).read_text())

    def rewrite_csv(self, path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(rows)
        write_text_atomic(path, buf.getvalue())

    def append_csv(self, path: Path, row: Sequence[Any]) -> None:
        """One row, flushed at once: `tail -f trials.csv` follows a running search."""
        with open(path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(row)
            fh.flush()


class EvalCache:
    """Suite results keyed by a content hash of what determines them; shared by every run on the machine.

    The key covers the merged weights (the recipe with checkpoint paths replaced by content
    fingerprints, or a reference checkpoint's fingerprint), the suite configuration, the data slice
    (split, limit, subset seed), the generation backend settings and the cache format. One entry per
    suite, so changing one objective keeps the others' cached scores.
    """

    def __init__(self, directory: str | Path | None = None, enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(directory).expanduser() if directory else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(weights_identity: Mapping[str, Any], suite: Mapping[str, Any], split: str, limit: int | None, seed: int,
            generator: Mapping[str, Any]) -> str:
        payload = {"format": CACHE_FORMAT, "weights": weights_identity, "suite": suite, "split": split,
                   "limit": limit, "seed": seed, "generator": generator}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / "evals" / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:  # a damaged entry is recomputed, never trusted
            log.warning("evaluation cache entry %s is unreadable (%s); recomputing", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, key: str, result: Mapping[str, Any]) -> None:
        if self.enabled:
            write_json_atomic(self._path(key), result)


def default_cache_dir() -> Path:
    env = os.environ.get("EVOMERGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "evomerge"


def weights_identity(recipe: Mapping[str, Any] | None, fingerprints: Mapping[str, str],
                     checkpoint: str | None = None) -> dict[str, Any]:
    """What determines the merged weights: the recipe with every checkpoint path replaced by its content
    fingerprint (so moving a checkpoint keeps its cache entries) and the methods' numerics version, or
    one checkpoint's fingerprint."""
    from evomerge.methods import NUMERICS_VERSION

    if checkpoint is not None:
        return {"checkpoint": fingerprints[checkpoint]}
    assert recipe is not None
    out = dict(recipe)
    if out.get("base") is not None:
        out["base"] = fingerprints[out["base"]]
    out["models"] = [fingerprints[m] for m in out["models"]]
    return {"recipe": out, "numerics": NUMERICS_VERSION}
