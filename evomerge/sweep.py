"""`evomerge sweep`: a grid over merge methods and their parameters, chosen on one split, reported on another.

    for each block (models merged together; by default every model):
        the references (base, each model) on both splits - once per run
        every grid point of every method on the search split (the objectives' own split)
        each method's point: the best average over the block's objectives on the search split
        the chosen points on the held-out split
    -> grid.csv (every point's search scores), table.md / table.csv (held-out scores of the chosen points)

Points are scored exactly as the search scores candidates: a `Worker` per device holds the base and
the task vectors (`ResidentMerger`) and one generator, merges each recipe in memory and runs the
suites; jobs go through `CachedJobs`, so the evaluation cache serves anything scored before, by a
sweep or a search. The paper chose its grid points on its test sets; a sweep never looks at the
held-out split to choose.

RUN_DIR/
  experiment.yaml   the sweep as validated, on its model set (a resumed run must match it)
  sweep.json        every finished evaluation (summary + items file); a resumed run skips them
  grid.csv          the references and every grid point on the search split, the chosen ones marked
  table.md, table.csv   the held-out table (evomerge.tables)
  items/            per-item results of every evaluation
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from evomerge.errors import ExperimentError
from evomerge.store import EvalCache, RunStore, canonical_json, write_json_atomic
from evomerge.sweep_experiment import SweepExperiment, SweepMethod
from evomerge.tables import Score, TableBlock, TableRow, write_tables

log = logging.getLogger(__name__)

# experiment fields a resumed sweep may change: they do not change any score
RESUMABLE_CHANGES = ("workers", "cache")
SEARCH, HELDOUT = "search", "heldout"


# -------------------------------------------------------------------------------------------------
# the grid
# -------------------------------------------------------------------------------------------------


def thin(values: Sequence[Any], most: int | None) -> list[Any]:
    """At most `most` values, evenly spaced and keeping both ends (a reduced grid for a quick run)."""
    values = list(values)
    if most is None or len(values) <= most:
        return values
    if most == 1:
        return values[:1]
    step = (len(values) - 1) / (most - 1)
    return [values[round(i * step)] for i in range(most)]


def expand_grid(method: SweepMethod, grid_max: int | None = None) -> list[dict[str, Any]]:
    """The grid's points, as the varied parameters of each: the cartesian product in the YAML's key order
    (the last key varies fastest). A method without a grid is one point with nothing varied."""
    keys = list(method.grid)
    axes = [thin(method.grid[k], grid_max) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(varied: Mapping[str, Any]) -> str:
    """{'lambda': 0.5, 'density': 0.2} -> 'lambda=0.5, density=0.2'."""
    return ", ".join(f"{k}={_value(v)}" for k, v in varied.items())


@dataclass(frozen=True)
class GridPoint:
    block: str
    label: str  # the method's row label in the YAML (TA, RAM+, ...)
    method: str
    varied: Mapping[str, Any]  # the grid's values at this point
    recipe: Mapping[str, Any]  # the full merge recipe (validated, as MergeRecipe.to_dict)

    @property
    def key(self) -> str:
        """Stable across runs and grid reductions: the block, the row and the varied values."""
        return f"{self.block}/{self.label}/{canonical_json(dict(self.varied))}"

    @property
    def items_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_") or "method"
        return f"{self.block}-{slug}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"


def choose_best(points: Sequence[GridPoint], averages: Mapping[str, float | None]) -> GridPoint | None:
    """The point with the highest average (by point key; None or NaN: not scored); the first on a tie."""
    best, best_avg = None, -math.inf
    for p in points:
        avg = averages.get(p.key)
        if avg is not None and math.isfinite(avg) and avg > best_avg:
            best, best_avg = p, avg
    return best


# -------------------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    run_dir: Path
    points: int  # grid points in the plan
    evaluations: int  # evaluations finished in this process (cache answers included)
    failed: int
    cache_hits: int
    seconds: float
    table: Path


class SweepRunner:
    def __init__(self, experiment: SweepExperiment, run_dir: str | Path, *, resume: bool = False,
                 progress: bool = True, grid_max: int | None = None, methods: Sequence[str] | None = None,
                 suite_factory: Callable | None = None, generator_factory: Callable | None = None):
        if grid_max is not None and grid_max < 1:
            raise ExperimentError("--grid-max must be at least 1")
        self.exp = experiment
        self.store = RunStore(run_dir)
        self.resume = resume
        self.progress = progress
        self.grid_max = grid_max
        self.method_labels = self._chosen_methods(methods)
        self.suite_factory = suite_factory
        self.generator_factory = generator_factory
        self.cache = EvalCache(experiment.cache.dir, experiment.cache.enabled)
        self.suites = {n: o.suite.model_dump(mode="json") for n, o in experiment.objectives.items()}
        self.generator = experiment.generator.model_dump(mode="json")
        self.state: dict[str, dict[str, Any]] = {"references": {}, "points": {}}
        self.evaluations = 0
        self.failed = 0
        self._bar = None

    def _chosen_methods(self, methods: Sequence[str] | None) -> list[str]:
        labels = list(self.exp.sweep.methods)
        if not methods:
            return labels
        unknown = [m for m in methods if m not in labels]
        if unknown:
            raise ExperimentError(f"--methods: {unknown} not in the sweep; its methods are {labels}")
        return [m for m in labels if m in methods]

    @property
    def state_file(self) -> Path:
        return self.store.dir / "sweep.json"

    # -- setup: everything that can be wrong is found before the run directory is written ----------------
    def _prepare(self) -> None:
        from evomerge.checkpoint import Checkpoint
        from evomerge.io.hub import with_local_checkpoints

        self.exp = exp = with_local_checkpoints(self.exp)  # Hub ids -> snapshot dirs, one commit for every worker
        for name, path in exp.references().items():
            if not Path(path).is_dir():
                hint = f"; {exp.hint}" if exp.hint else ""
                raise ExperimentError(f"model set '{exp.model_set}': the checkpoint of '{name}' ({path}) does not "
                                      f"exist{hint}")
        self.fingerprints = {p: Checkpoint.open(p).fingerprint for p in exp.references().values()}
        self.points = {block: self._block_points(block) for block in exp.blocks()}
        if self.resume:
            self.store.check_resumable(exp, RESUMABLE_CHANGES)
            if self.state_file.is_file():
                self.state = self.store.read_json(self.state_file.name)
        else:
            self.store.create(exp)
            write_json_atomic(self.state_file, self.state)

    def _block_points(self, block: str) -> list[GridPoint]:
        from evomerge.recipe import MergeRecipe

        exp = self.exp
        models = [exp.models[m] for m in exp.blocks()[block].models]
        points = []
        for label in self.method_labels:
            cfg = exp.sweep.methods[label]
            for varied in expand_grid(cfg, self.grid_max):
                recipe = {"base": exp.base, "models": models, "method": cfg.method,
                          "parameters": {**cfg.parameters, **varied}, "dtype": exp.dtype, "seed": exp.seed}
                where = f"sweep.methods.{label} in block '{block}'" + (f" at {describe(varied)}" if varied else "")
                points.append(GridPoint(block, label, cfg.method, varied,
                                        MergeRecipe.from_dict(recipe, where=where).to_dict()))
        return points

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> SweepSummary:
        t0 = time.perf_counter()
        self._prepare()
        self._bar = self._progress_bar()
        try:
            for block in self.exp.blocks():
                self._run_block(block)
        finally:
            if self._bar is not None:
                self._bar.close()
        self._write_grid_csv()
        md, _ = self._write_tables()
        return SweepSummary(self.store.dir, sum(len(p) for p in self.points.values()), self.evaluations,
                            self.failed, self.cache.hits, time.perf_counter() - t0, md)

    def _run_block(self, block: str) -> None:
        refs = [(name, split) for name in self.exp.references() for split in (SEARCH, HELDOUT)
                if not self._done(self._ref_entry(name, split))]
        search = [p for p in self.points[block] if not self._done(self._point_entry(p, SEARCH))]
        if not refs and not search and not self._heldout_todo(block):
            return  # everything was scored before this process started
        with self._pool(block) as pool:
            from evomerge.jobs import CachedJobs

            jobs = CachedJobs(pool, self.cache, self.suites, self.exp.seed, self.generator, self.fingerprints)
            by_key: dict[str, GridPoint] = {}
            for name, split in refs:
                jobs.enqueue(f"ref/{name}/{split}", checkpoint=self.exp.references()[name], **self._slice(split))
            for i, p in enumerate(search):
                by_key[f"pt/{i}/{SEARCH}"] = p
                jobs.enqueue(f"pt/{i}/{SEARCH}", recipe=dict(p.recipe), suites=self.exp.columns(block),
                             **self._slice(SEARCH))
            self._collect(jobs, by_key, block)
            self._write_grid_csv()
            for i, p in enumerate(self._heldout_todo(block)):
                by_key[f"pt/{i}/{HELDOUT}"] = p
                jobs.enqueue(f"pt/{i}/{HELDOUT}", recipe=dict(p.recipe), suites=self.exp.columns(block),
                             **self._slice(HELDOUT))
            self._collect(jobs, by_key, block)

    def _slice(self, split: str) -> dict[str, Any]:
        """EvalJob split and limit: the objectives' own on the search side, the held-out settings on the other."""
        if split == SEARCH:
            return {"split": None, "limit": None}
        return {"split": self.exp.heldout.split, "limit": self.exp.heldout.limit}

    def _split_name(self, side: str) -> str:
        """The data split behind a side of the run ('search' or 'heldout'), for file names."""
        if side == SEARCH:
            return "-".join(sorted({o.suite.split for o in self.exp.objectives.values()}))
        return self.exp.heldout.split

    def _pool(self, block: str):
        from evomerge.workers import WorkerSetup, build_pool

        exp, w = self.exp, self.exp.workers
        setup = WorkerSetup(base=exp.base, models=[exp.models[m] for m in exp.blocks()[block].models],
                            suites=self.suites, generator=self.generator, suite_factory=self.suite_factory,
                            generator_factory=self.generator_factory, threads=w.threads)
        kind = "ray" if w.ray_address else w.kind
        return build_pool(kind, setup, w.count, w.devices, w.ray_address, w.cpus_per_worker, w.gpus_per_worker)

    def _collect(self, jobs, by_key: Mapping[str, GridPoint], block: str) -> None:
        while True:
            outcomes = jobs.next_outcomes()
            if not outcomes:
                return
            for outcome in outcomes:
                kind, ident, split = outcome.key.split("/")
                if kind == "ref":  # state["references"][split][name]
                    section, slot = self.state["references"].setdefault(split, {}), ident
                    items_name, what = f"ref-{ident}-{self._split_name(split)}", f"the reference '{ident}' ({split})"
                else:  # state["points"][point key][split]
                    point = by_key[outcome.key]
                    section, slot = self.state["points"].setdefault(point.key, {}), split
                    items_name, what = f"{point.items_name}-{self._split_name(split)}", f"{point.key} ({split})"
                if outcome.ok:
                    section[slot] = {"suites": _summaries(outcome.results),
                                     "items_file": self.store.write_items(items_name, outcome.results)}
                else:
                    self.failed += 1
                    log.warning("%s failed: %s", what, outcome.reason)
                    section[slot] = {"failure": outcome.reason}
                self.evaluations += 1
                write_json_atomic(self.state_file, self.state)
                if self._bar is not None:
                    self._bar.update(1)
                    self._bar.set_postfix(block=block, failed=self.failed, cached=self.cache.hits, refresh=False)

    # -- state ----------------------------------------------------------------------------------------
    def _ref_entry(self, name: str, split: str) -> Mapping[str, Any] | None:
        return self.state["references"].get(split, {}).get(name)

    def _point_entry(self, point: GridPoint, split: str) -> Mapping[str, Any] | None:
        return self.state["points"].get(point.key, {}).get(split)

    @staticmethod
    def _done(entry: Mapping[str, Any] | None) -> bool:
        """Scored; a failed evaluation is tried again when the run resumes."""
        return entry is not None and "suites" in entry

    def _search_average(self, point: GridPoint) -> float | None:
        entry = self._point_entry(point, SEARCH)
        if not self._done(entry):
            return None
        return _mean_over(entry["suites"], self.exp.columns(point.block))

    def _rows_of(self, block: str) -> list[tuple[str, list[GridPoint]]]:
        """(method label, the points it reports on the held-out split): its best point, or every point."""
        out = []
        for label in self.method_labels:
            points = [p for p in self.points[block] if p.label == label]
            if self.exp.sweep.methods[label].report == "every":
                out.append((label, points))
            else:
                best = choose_best(points, {p.key: self._search_average(p) for p in points})
                out.append((label, [best] if best is not None else []))
        return out

    def _heldout_todo(self, block: str) -> list[GridPoint]:
        if any(self._point_entry(p, SEARCH) is None for p in self.points[block]):
            return []  # the choice waits for the whole grid (a failed point has had its chance)
        return [p for _, points in self._rows_of(block) for p in points
                if self._done(self._point_entry(p, SEARCH)) and not self._done(self._point_entry(p, HELDOUT))]

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        # the references on both splits, every point on the search split, each table row on the held-out one
        total = 2 * len(self.exp.references())
        for points in self.points.values():
            total += len(points)
            for label in self.method_labels:
                every = self.exp.sweep.methods[label].report == "every"
                total += sum(p.label == label for p in points) if every else 1
        done = sum(self._done(self._ref_entry(n, s)) for n in self.exp.references() for s in (SEARCH, HELDOUT))
        done += sum(self._done(self._point_entry(p, s)) for pts in self.points.values() for p in pts
                    for s in (SEARCH, HELDOUT))
        return tqdm(total=total, initial=min(done, total), desc=f"sweep {self.exp.name}", unit="eval",
                    dynamic_ncols=True)

    # -- outputs ---------------------------------------------------------------------------------------
    def _write_grid_csv(self) -> None:
        objectives = list(self.exp.objectives)
        header = ["block", "row", "method", "grid_point", "parameters", "status", "chosen", "search_average"]
        for o in objectives:
            header += [o, f"{o}_stderr", f"{o}_n"]
        header += ["items_file", "failure"]
        rows = []
        for name in self.exp.references():
            entry = self._ref_entry(name, SEARCH)
            rows.append(["", self.exp.label(name), "", "", "", *self._status_cells(entry, objectives, None, "")])
        for block, points in self.points.items():
            chosen = {p.key for _, pts in self._rows_of(block) for p in pts}
            for p in points:
                entry = self._point_entry(p, SEARCH)
                rows.append([block, p.label, p.method, describe(p.varied),
                             canonical_json(p.recipe["parameters"]),
                             *self._status_cells(entry, objectives, self.exp.columns(block),
                                                 "yes" if p.key in chosen else "")])
        self.store.rewrite_csv(self.store.dir / "grid.csv", header, rows)

    def _status_cells(self, entry: Mapping[str, Any] | None, objectives: Sequence[str],
                      columns: Sequence[str] | None, chosen: str) -> list[Any]:
        """status, chosen, search_average, (mean, stderr, n) per objective, items_file, failure."""
        if entry is None:
            return ["pending", chosen, ""] + ["", "", ""] * len(objectives) + ["", ""]
        if "failure" in entry:
            return ["failed", chosen, ""] + ["", "", ""] * len(objectives) + ["", entry["failure"]]
        suites = entry["suites"]
        avg = _mean_over(suites, columns if columns is not None else [o for o in objectives if o in suites])
        cells: list[Any] = []
        for o in objectives:
            s = suites.get(o)
            cells += ["", "", ""] if s is None else [s["mean"], s["stderr"], s["n"]]
        return ["ok", chosen, "" if avg is None else avg] + cells + [entry["items_file"], ""]

    def _write_tables(self) -> tuple[Path, Path]:
        exp = self.exp
        blocks = []
        for block, spec in exp.blocks().items():
            columns = exp.columns(block)
            rows = []
            for name in (["base"] if exp.base else []) + list(spec.models):
                entry = self._ref_entry(name, HELDOUT)
                rows.append(TableRow(exp.label(name), "base" if name == "base" else "specialist",
                                     _scores(entry, columns), failure=_failure(entry)))
            for label, points in self._rows_of(block):
                every = exp.sweep.methods[label].report == "every"
                if not points:
                    reasons = {_failure(self._point_entry(p, SEARCH)) for p in self.points[block] if p.label == label}
                    rows.append(TableRow(label, "method", {}, method=exp.sweep.methods[label].method,
                                         failure="every grid point failed on the search split: "
                                                 + "; ".join(sorted(r for r in reasons if r))))
                for p in points:
                    entry = self._point_entry(p, HELDOUT)
                    rows.append(TableRow(f"{label} ({describe(p.varied)})" if every and p.varied else label, "method",
                                         _scores(entry, columns), method=p.method, point=describe(p.varied),
                                         parameters=dict(p.recipe["parameters"]),
                                         search_average=self._search_average(p), failure=_failure(entry)))
            title = spec.title or " + ".join(exp.label(m) for m in spec.models)
            blocks.append(TableBlock(block, title, columns, rows))
        return write_tables(self.store.dir, f"{exp.name} — model set `{exp.model_set}`", self._notes(), blocks,
                            self._grids())

    def _notes(self) -> list[str]:
        exp = self.exp
        splits = sorted({o.suite.split for o in exp.objectives.values()})
        limit = f", at most {exp.heldout.limit} items per objective" if exp.heldout.limit else ""
        notes = [
            f"Scores on the held-out `{exp.heldout.split}` split{limit}: mean ± standard error, in %. "
            f"Each method's grid point (last column) was chosen on the `{'`/`'.join(splits)}` split by the average "
            f"over the block's objectives (that average in brackets); the held-out split played no part in the "
            f"choice. The paper chose its grid points on its test sets; we do not.",
            "Avg: the mean of the columns; its standard error is sqrt(sum of squared standard errors) / number of "
            "columns (columns taken as independent). Bold: the best value of a column.",
        ]
        if exp.description:
            notes.append(f"Model set `{exp.model_set}`: {exp.description}")
        from evaluators.registry import scoring_of

        scorings = {o: scoring_of(obj.suite) for o, obj in exp.objectives.items()}
        if any(scorings.values()):
            notes.append("Scoring: " + ", ".join(f"{o} `{s}`" for o, s in scorings.items() if s) + ".")
        if self.grid_max is not None or self.method_labels != list(exp.sweep.methods):
            notes.append(f"Reduced run: at most {self.grid_max or 'all'} values per grid parameter; methods "
                         f"{', '.join(self.method_labels)}.")
        return notes

    def _grids(self) -> list[str]:
        lines = ["Grids (chosen per method on the search split):", ""]
        for label in self.method_labels:
            cfg = self.exp.sweep.methods[label]
            fixed = f" with {describe(cfg.parameters)}" if cfg.parameters else ""
            grid = "; ".join(f"{k} ∈ {{{', '.join(_value(v) for v in thin(vs, self.grid_max))}}}"
                             for k, vs in cfg.grid.items())
            every = " (a row per point)" if cfg.report == "every" else ""
            lines.append(f"- {label}: `{cfg.method}`{fixed}" + (f"; {grid}" if grid else "") + every)
        return lines


def _summaries(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {s: {"mean": r["mean"], "stderr": r["stderr"], "n": r["n"]} for s, r in results.items()}


def _mean_over(suites: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> float | None:
    if not columns or any(c not in suites for c in columns):
        return None
    return sum(float(suites[c]["mean"]) for c in columns) / len(columns)


def _scores(entry: Mapping[str, Any] | None, columns: Sequence[str]) -> dict[str, Score]:
    if entry is None or "suites" not in entry:
        return {}
    return {c: Score(float(s["mean"]), float(s["stderr"]), int(s["n"]))
            for c in columns if (s := entry["suites"].get(c)) is not None}


def _failure(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "not scored"
    return entry.get("failure", "")


def run_sweep(experiment: SweepExperiment, run_dir: str | Path, **kwargs) -> SweepSummary:
    return SweepRunner(experiment, run_dir, **kwargs).run()

