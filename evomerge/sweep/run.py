"""`evomerge sweep`: a grid over merge methods and their parameters, chosen on one split, reported on another.

    for each block (models merged together; by default every model):
        the references (base, each model) on both splits - once per run
        every grid point of every method on the search split (the objectives' own split)
        each method's point: the best average over the block's objectives on the search split
        the chosen points on the held-out split
    -> grid.csv (every point's search scores), table.md / table.csv (held-out scores of the chosen points)

Points are scored exactly as the search scores candidates, through the same scoring layer
(evomerge.scoring): a `Worker` per device holds the base and the task vectors and one generator,
merges each recipe in memory and runs the suites; the evaluation cache serves anything scored
before, by a sweep or a search. The paper chose its grid points on its test sets; a sweep never looks
at the held-out split to choose.

RUN_DIR/
  experiment.yaml   the sweep as validated, on its model set (a resumed run must match it)
  sweep.json        every finished evaluation (summary + items file + what produced it); a resumed run skips them
  grid.csv          the references and every grid point on the search split, the chosen ones marked
  table.md, table.csv   the held-out table (evomerge.report.tables)
  items/            per-item results of every evaluation
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from evomerge.errors import ExperimentError
from evomerge.rundir import RunDir
from evomerge.scoring.outcomes import HELDOUT, SEARCH, JobKey
from evomerge.scoring.session import Scoring
from evomerge.sweep.experiment import SweepExperiment
from evomerge.sweep.grid import GridPoint, choose_best, describe, expand_grid
from evomerge.sweep.state import Evaluation, SweepState, done

log = logging.getLogger(__name__)

# experiment fields a resumed sweep may change: they do not change any score
RESUMABLE_CHANGES = ("workers", "cache")


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
        self.store = RunDir(run_dir)
        self.resume = resume
        self.progress = progress
        self.grid_max = grid_max
        self.method_labels = self._chosen_methods(methods)
        self.suite_factory = suite_factory
        self.generator_factory = generator_factory
        self.state = SweepState()
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
        from evomerge.io.hub import with_local_checkpoints

        self.exp = exp = with_local_checkpoints(self.exp)  # Hub ids -> snapshot dirs, one commit for every worker
        for name, path in exp.references().items():
            if not Path(path).is_dir():
                hint = f"; {exp.hint}" if exp.hint else ""
                raise ExperimentError(f"model set '{exp.model_set}': the checkpoint of '{name}' ({path}) does not "
                                      f"exist{hint}")
        self.scoring = Scoring.for_experiment(exp, list(exp.references().values()), suite_factory=self.suite_factory,
                                              generator_factory=self.generator_factory)
        self.points = {block: self._block_points(block) for block in exp.blocks()}
        if self.resume:
            self.store.check_resumable(exp, RESUMABLE_CHANGES)
            if self.state_file.is_file():
                self.state = SweepState.from_dict(self.store.read_json(self.state_file.name))
        else:
            self.store.create(exp)
            self.state.save(self.state_file)

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
        from evomerge.sweep.outputs import write_grid_csv, write_sweep_tables

        t0 = time.perf_counter()
        self._prepare()
        self._bar = self._progress_bar()
        try:
            for block in self.exp.blocks():
                self._run_block(block)
        finally:
            if self._bar is not None:
                self._bar.close()
        write_grid_csv(self)
        md, _ = write_sweep_tables(self)
        return SweepSummary(self.store.dir, sum(len(p) for p in self.points.values()), self.evaluations,
                            self.failed, self.scoring.cache.hits, time.perf_counter() - t0, md)

    def _run_block(self, block: str) -> None:
        from evomerge.sweep.outputs import write_grid_csv

        refs = [(name, side) for name in self.exp.references() for side in (SEARCH, HELDOUT)
                if not done(self.state.reference(name, side))]
        search = [p for p in self.points[block] if not done(self.state.point(p.key, SEARCH))]
        if not refs and not search and not self.heldout_todo(block):
            return  # everything was scored before this process started
        exp = self.exp
        setup = self.scoring.worker_setup(exp.base, [exp.models[m] for m in exp.blocks()[block].models])
        with self.scoring.open_pool(setup) as pool:
            jobs = self.scoring.queue(pool)
            by_key: dict[JobKey, GridPoint] = {}
            for name, side in refs:
                jobs.enqueue(JobKey.reference(name, side), checkpoint=exp.references()[name], **self._slice(side))
            for i, p in enumerate(search):
                by_key[JobKey.point(i, SEARCH)] = p
                jobs.enqueue(JobKey.point(i, SEARCH), recipe=dict(p.recipe), suites=exp.columns(block),
                             **self._slice(SEARCH))
            self._collect(jobs, by_key, block)
            write_grid_csv(self)
            for i, p in enumerate(self.heldout_todo(block)):
                by_key[JobKey.point(i, HELDOUT)] = p
                jobs.enqueue(JobKey.point(i, HELDOUT), recipe=dict(p.recipe), suites=exp.columns(block),
                             **self._slice(HELDOUT))
            self._collect(jobs, by_key, block)

    def _slice(self, side: str) -> dict[str, Any]:
        """EvalJob split and limit: the objectives' own on the search side, the held-out settings on the other."""
        if side == SEARCH:
            return {"split": None, "limit": None}
        return {"split": self.exp.heldout.split, "limit": self.exp.heldout.limit}

    def _split_name(self, side: str) -> str:
        """The data split behind a side of the run ('search' or 'heldout'), for file names."""
        if side == SEARCH:
            return "-".join(sorted({o.suite.split for o in self.exp.objectives.values()}))
        return self.exp.heldout.split

    def _collect(self, jobs, by_key: Mapping[JobKey, GridPoint], block: str) -> None:
        while True:
            outcomes = jobs.next_outcomes()
            if not outcomes:
                return
            for outcome in outcomes:
                key = outcome.key
                side = key.side
                if key.subject == "reference":  # state.references[side][name]
                    name = str(key.id)
                    section, slot = self.state.references.setdefault(side, {}), name
                    items_name, what = f"ref-{name}-{self._split_name(side)}", f"the reference '{name}' ({side})"
                else:  # state.points[point key][side]
                    point = by_key[key]
                    section, slot = self.state.points.setdefault(point.key, {}), side
                    items_name, what = f"{point.items_name}-{self._split_name(side)}", f"{point.key} ({side})"
                if outcome.ok:
                    section[slot] = Evaluation.of(outcome, self.store.write_items(items_name, outcome.results))
                else:
                    self.failed += 1
                    log.warning("%s failed: %s", what, outcome.reason)
                    section[slot] = Evaluation(failure=outcome.reason)
                self.evaluations += 1
                self.state.save(self.state_file)
                if self._bar is not None:
                    self._bar.update(1)
                    self._bar.set_postfix(block=block, failed=self.failed, cached=self.scoring.cache.hits,
                                          refresh=False)

    # -- choosing ---------------------------------------------------------------------------------------
    def search_average(self, point: GridPoint) -> float | None:
        entry = self.state.point(point.key, SEARCH)
        if not done(entry):
            return None
        return entry.mean_over(self.exp.columns(point.block))

    def rows_of(self, block: str) -> list[tuple[str, list[GridPoint]]]:
        """(method label, the points it reports on the held-out split): its best point, or every point."""
        out = []
        for label in self.method_labels:
            points = [p for p in self.points[block] if p.label == label]
            if self.exp.sweep.methods[label].report == "every":
                out.append((label, points))
            else:
                best = choose_best(points, {p.key: self.search_average(p) for p in points})
                out.append((label, [best] if best is not None else []))
        return out

    def heldout_todo(self, block: str) -> list[GridPoint]:
        if any(self.state.point(p.key, SEARCH) is None for p in self.points[block]):
            return []  # the choice waits for the whole grid (a failed point has had its chance)
        return [p for _, points in self.rows_of(block) for p in points
                if done(self.state.point(p.key, SEARCH)) and not done(self.state.point(p.key, HELDOUT))]

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
        finished = sum(done(self.state.reference(n, s)) for n in self.exp.references() for s in (SEARCH, HELDOUT))
        finished += sum(done(self.state.point(p.key, s)) for pts in self.points.values() for p in pts
                        for s in (SEARCH, HELDOUT))
        return tqdm(total=total, initial=min(finished, total), desc=f"sweep {self.exp.name}", unit="eval",
                    dynamic_ncols=True)


def run_sweep(experiment: SweepExperiment, run_dir: str | Path, **kwargs) -> SweepSummary:
    return SweepRunner(experiment, run_dir, **kwargs).run()
