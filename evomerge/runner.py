"""The search loop: ask the optimizer, score candidates on workers (rung by rung), tell, keep the front.

    references (base + each model) -> [ask -> rung 0 -> promote? -> rung 1 ... -> tell]* -> held-out -> report

- Budget: the number of candidates (trials). A resumed run counts the trials already finished.
- Asynchronous (default): a new candidate starts whenever a worker is free; results are told as they
  arrive. Synchronous: one generation (the optimizer's batch) at a time, told in ask order, so the
  same seed gives the same run whatever the workers' speed (Ray or local, 1 or 8 workers).
- Multi-fidelity: every candidate is scored on rung 0; it climbs a rung only while it could still be
  non-dominated among the candidates scored on its rung (evomerge.search.fidelity). The front and
  the hypervolume use top-rung scores only.
- Failures (exception, non-finite output, out of memory, a dead worker) fail the trial with a reason;
  the optimizer hears about it and the run goes on.
- Resume: trials are finished in the storage only once; a trial that was running when the process
  died is scored again under its own number (its finished rungs are kept), so nothing completed is
  lost or repeated and the budget holds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from evomerge.errors import EvomergeError, ExperimentError
from evomerge.experiment import Experiment
from evomerge.genome import SearchSpace, load_space_spec
from evomerge.jobs import CachedJobs
from evomerge.search.fidelity import FidelityLadder, Scored
from evomerge.search.optuna_samplers import record_constraints
from evomerge.search.pareto import hypervolume, pareto_front
from evomerge.store import EvalCache, RunStore, write_json_atomic
from evomerge.workers import EvalOutcome, Pool, WorkerSetup, build_pool

if TYPE_CHECKING:
    import optuna

    from evomerge.search.base import Optimizer

log = logging.getLogger(__name__)


class StalledError(EvomergeError):
    """The optimizer proposes nothing and nothing is running: a bug, reported instead of a hang."""


@dataclass
class _Live:
    """A trial being scored in this process."""

    number: int
    trial: "optuna.trial.Trial"
    genome: dict[str, Any]
    recipe: dict[str, Any]
    rung: int = 0
    results: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)  # rung -> suite -> result
    merge_seconds: float = 0.0
    eval_seconds: float = 0.0
    worker: str = ""
    failure: str | None = None
    done: bool = False  # scored as far as it goes (failed, not promoted, or top rung)


@dataclass
class RunSummary:
    run_dir: Path
    finished: int
    failed: int
    front: list[int]
    hypervolume: float
    evaluations_per_rung: list[int]
    cache_hits: int
    seconds: float


class SearchRunner:
    def __init__(self, experiment: Experiment, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 suite_factory: Callable | None = None, generator_factory: Callable | None = None,
                 pool: Pool | None = None, report: bool = True):
        self.exp = experiment
        self.store = RunStore(run_dir, experiment.storage)
        self.resume = resume
        self.progress = progress
        self.suite_factory = suite_factory
        self.generator_factory = generator_factory
        self._pool = pool
        self.write_report = report  # the plots and report.html (front.json and the CSVs are always written)
        self.ladder = FidelityLadder(tuple(experiment.fidelity.rungs), experiment.fidelity.z)
        self.signs = np.asarray(experiment.signs())
        self.n_obj = len(self.signs)
        self.cache = EvalCache(experiment.cache.dir, experiment.cache.enabled)
        self.jobs: CachedJobs | None = None  # set once the pool runs
        self.live: dict[int, _Live] = {}
        self.rung_scores: dict[int, dict[int, Scored]] = {r: {} for r in range(self.ladder.top + 1)}
        self.archive: dict[int, np.ndarray] = {}  # feasible top-rung trials: number -> maximised objectives
        self.frozen: dict[int, "optuna.trial.FrozenTrial"] = {}  # finished trials
        self.finished = 0
        self.failed = 0
        self.hv = 0.0
        self.front: list[int] = []

    # =============================================================================================
    # setup
    # =============================================================================================
    def _prepare(self) -> None:
        from evomerge.checkpoint import Checkpoint

        exp = self.exp
        # everything that can be wrong with the inputs is found before the run directory is written
        spec = load_space_spec(exp.search_space, exp.space or None)
        self.space = SearchSpace.for_checkpoints(spec, exp.base, exp.models, seed=exp.seed, dtype=exp.dtype)
        paths = ([exp.base] if exp.base else []) + list(exp.models.values())
        self.fingerprints = {p: Checkpoint.open(p).fingerprint for p in paths}
        if self.resume:
            self.store.check_resumable(exp)
        else:
            self.store.create(exp)
        self.setup = WorkerSetup(
            base=exp.base, models=list(exp.models.values()),
            suites={n: o.suite.model_dump(mode="json") for n, o in exp.objectives.items()},
            generator=exp.generator.model_dump(mode="json"),
            suite_factory=self.suite_factory, generator_factory=self.generator_factory,
            threads=exp.workers.threads,
        )
        self.genes = [g.name for g in self.space.genes]

    def _start_pool(self) -> Pool:
        if self._pool is not None:
            return self._pool
        w = self.exp.workers
        kind = "ray" if w.ray_address else w.kind
        return build_pool(kind, self.setup, w.count, w.devices, w.ray_address, w.cpus_per_worker, w.gpus_per_worker)

    # =============================================================================================
    # the run
    # =============================================================================================
    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        self._prepare()
        self.pool = self._start_pool()
        self.jobs = CachedJobs(self.pool, self.cache, self.setup.suites, self.exp.seed, self.setup.generator,
                               self.fingerprints)
        try:
            self.references = self._load_or_score_references()
            self.reference_point = self._reference_point()
            self.study, self.optimizer = self._build_optimizer()
            pending = self._recover()
            self._rebuild_outputs()
            self._bar = self._progress_bar()
            try:
                if self.exp.workers.mode == "sync":
                    self._run_sync(pending)
                else:
                    self._run_async(pending)
            finally:
                if self._bar is not None:
                    self._bar.close()
            if self.exp.heldout.enabled:
                self._score_heldout()
        finally:
            if self._pool is None:
                self.pool.close()
        if self.write_report:
            from evomerge import report

            report.write_report(self.store.dir)
        return RunSummary(self.store.dir, self.finished, self.failed, list(self.front), self.hv,
                          self._evaluations_per_rung(), self.cache.hits, time.perf_counter() - t0)

    # -- references ----------------------------------------------------------------------------------
    def _reference_models(self) -> dict[str, str]:
        refs = {"base": self.exp.base} if self.exp.base else {}
        refs.update(self.exp.models)
        return refs

    def _load_or_score_references(self) -> dict[str, dict[str, Any]]:
        """Scores of the base and of each model on the search slice (top rung): reference point,
        constraints, CMA-ES normalisation and the report's comparison rows."""
        if not self.exp.references:
            return {}
        path = self.store.references_json
        refs = self.store.read_json(path.name) if path.is_file() else {}
        todo = {n: p for n, p in self._reference_models().items() if "search" not in refs.get(n, {})}
        for name, ckpt in todo.items():
            self.jobs.enqueue(f"ref/{name}/search", checkpoint=ckpt, split=None, limit=self.ladder.limits[-1])
        for outcome in self.jobs.drain():
            name = outcome.key.split("/")[1]
            entry = refs.setdefault(name, {"path": self._reference_models()[name]})
            if not outcome.ok:
                log.warning("scoring the reference model '%s' failed: %s", name, outcome.reason)
                entry["failure"] = outcome.reason
                write_json_atomic(path, refs)
                continue
            entry.pop("failure", None)
            entry["search"] = _summaries(outcome.results)
            entry["search_values"], entry["search_stderrs"] = self._objective_vector(outcome.results)
            entry["items_file"] = self.store.write_items(f"ref-{name}-search", outcome.results)
            write_json_atomic(path, refs)
        scored = {n: r for n, r in refs.items() if "search_values" in r}
        c = self.exp.constraints
        if c.max_drop is not None:
            needed = {"base"} if c.relative_to == "base" else {s if s in refs else "base" for s in self.exp.suite_names}
            for name in sorted(needed - set(scored)):
                raise EvomergeError(f"constraints need the score of the reference model '{name}', but scoring it "
                                    f"failed: {refs.get(name, {}).get('failure', 'not scored')}")
        return scored

    def _reference_point(self) -> np.ndarray:
        exp = self.exp
        if exp.reference_point is not None:
            return np.asarray(exp.reference_point, float) * self.signs
        if exp.base and exp.references:
            if "base" not in self.references:
                raise EvomergeError("the hypervolume's reference point defaults to the base model's scores, and scoring "
                                    "the base failed; give reference_point in the experiment")
            return np.asarray(self.references["base"]["search_values"], float) * self.signs
        if exp.cost is not None:
            raise ExperimentError("with a cost objective and no base model, give reference_point explicitly")
        return np.zeros(self.n_obj)

    # -- optimizer -----------------------------------------------------------------------------------
    def _build_optimizer(self) -> tuple["optuna.Study", "Optimizer"]:
        import optuna

        from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler, resumed_seed

        opt = self.exp.optimizer
        constrained = self.exp.constraints.max_drop is not None
        existing = self.store.existing_trials() if self.resume else 0
        seed = resumed_seed(self.exp.seed, existing)
        if opt.name == "cmaes":
            from evomerge.search.cma import CMAESOptimizer

            study = self.store.study(optuna.samplers.RandomSampler(seed=seed), self.n_obj)
            refs = [np.asarray(r["search_values"]) * self.signs for r in self.references.values()] or None
            optimizer = CMAESOptimizer(study, self.space, self.n_obj, opt.population, self.exp.seed,
                                       self.exp.weights(), refs, opt.settings)
        else:
            sampler = build_sampler(opt.name, opt.population, seed, opt.settings, constrained, space=self.space)
            study = self.store.study(sampler, self.n_obj)
            optimizer = OptunaOptimizer(opt.name, study, self.space, opt.population)
        from evomerge.search.warm_start import warm_started

        return study, warm_started(optimizer, study, self.space, self.exp)

    # -- resume --------------------------------------------------------------------------------------
    def _recover(self) -> list[_Live]:
        """Discard half-created trials, reload finished ones, and return running ones to score again."""
        import optuna
        from optuna.trial import TrialState

        study = self.study
        for _ in [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]:
            trial = study.ask()  # pops the waiting (enqueued, never started) trial
            trial.set_user_attr("discarded", "enqueued but never started before a restart")
            study.tell(trial, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        self._check_same_genes(trials)
        valid, pending = [], []
        for t in trials:
            if t.user_attrs.get("discarded"):
                continue
            if t.state == TrialState.RUNNING:
                # Optuna has no public way from a stored trial to a writable Trial; its id is the documented key
                if set(t.params) != set(self.genes):  # died between ask and its genome being stored
                    trial = optuna.trial.Trial(study, t._trial_id)
                    trial.set_user_attr("discarded", "genome incomplete when the previous process stopped")
                    study.tell(t.number, state=TrialState.FAIL)
                    continue
                live = _Live(t.number, optuna.trial.Trial(study, t._trial_id), dict(t.params),
                             self.space.decode(t.params).to_dict())
                if t.user_attrs.get("rungs"):
                    saved = self.store.read_json(f"items/{_items_name(t.number)}.json")
                    live.results = {int(r): saved[r] for r in t.user_attrs["rungs"]}
                    live.rung = max(live.results)
                    for r, res in live.results.items():
                        self._record_rung(live.number, r, res)
                pending.append(live)
                self.live[live.number] = live
            valid.append(t)
            if t.state.is_finished() and t.state != TrialState.RUNNING:
                for r, res in (t.user_attrs.get("rungs") or {}).items():
                    self.rung_scores[int(r)][t.number] = Scored(tuple(np.asarray(res["values"]) * self.signs),
                                                                tuple(res["stderrs"]))
        self.optimizer.restore(valid)
        if pending:
            log.info("resuming: %d trial(s) were running when the run stopped; scoring them again", len(pending))
        return sorted(pending, key=lambda lv: lv.number)

    def _check_same_genes(self, trials) -> None:
        """The experiment names its space (a bundled name or a file), so editing that space between two runs is
        not a change of the experiment; it is one of the genome, which stored trials cannot be decoded under."""
        from optuna.trial import TrialState

        genes = set(self.genes)
        for t in trials:
            if t.user_attrs.get("discarded") or not t.params:
                continue
            stored = set(t.params)
            # a trial killed while its genome was being stored holds part of it (`_recover` discards it)
            if stored == genes or (t.state == TrialState.RUNNING and stored < genes):
                continue
            raise ExperimentError(
                f"{self.store.dir}: cannot resume: trial {t.number} has other genes than the search space "
                f"'{self.exp.search_space}' gives now (not in the space now: {sorted(stored - genes)[:4]}; new: "
                f"{sorted(genes - stored)[:4]}); was the space edited since the run started? Restore it, or start "
                f"a new run with another --out")

    # -- async / sync loops --------------------------------------------------------------------------
    def _budget_left(self) -> int:
        return self.exp.budget - self.finished - len(self.live)

    def _run_async(self, pending: list[_Live]) -> None:
        for live in pending:
            self._resume_live(live)
        while True:
            # a cached result takes a slot too, so a run asks and tells in the same order with or without the cache
            while self._budget_left() > 0 and self.pool.free_slots() > self.jobs.waiting():
                proposal = self.optimizer.ask()
                if proposal is None:
                    break
                self._start_trial(proposal)
            outcomes = self.jobs.next_outcomes()
            if not outcomes:
                if self.live or self._budget_left() > 0:
                    raise StalledError(f"optimizer '{self.optimizer.name}' proposed nothing while no candidate is "
                                       f"being scored ({len(self.live)} open trial(s))")
                return
            for outcome in outcomes:
                live = self.live[int(outcome.key.split("/")[1])]
                self._absorb(live, outcome)
                if not live.done:
                    self._decide(live)
                if live.done:
                    self._finish(live)

    def _run_sync(self, pending: list[_Live]) -> None:
        if pending:
            self._run_generation(pending)
        while self._budget_left() > 0:
            batch: list[_Live] = []
            room = min(self.optimizer.batch_size, self._budget_left())
            while len(batch) < room:
                proposal = self.optimizer.ask()
                if proposal is None:
                    break
                batch.append(self._register(proposal))
            if not batch:
                raise StalledError(f"optimizer '{self.optimizer.name}' proposed nothing for a new generation")
            self._run_generation(batch)

    def _run_generation(self, batch: list[_Live]) -> None:
        """Score a batch rung by rung; promotion decisions and tells happen in batch order."""
        for rung in range(self.ladder.top + 1):
            for live in batch:
                if not live.done and live.rung == rung and rung not in live.results:
                    self._enqueue_rung(live)
            for outcome in self.jobs.drain():
                self._absorb(self.live[int(outcome.key.split("/")[1])], outcome)
            for live in batch:
                if not live.done and live.rung == rung:
                    self._decide(live)
        for live in batch:
            self._finish(live)

    # -- one trial -----------------------------------------------------------------------------------
    def _register(self, proposal) -> _Live:
        recipe = self.space.decode(proposal.values).to_dict()
        trial = proposal.trial
        for k, v in proposal.attrs.items():
            if k not in trial.user_attrs:
                trial.set_user_attr(k, v)
        trial.set_user_attr("recipe", recipe)
        live = _Live(proposal.number, trial, proposal.values, recipe)
        self.live[live.number] = live
        return live

    def _start_trial(self, proposal) -> None:
        self._enqueue_rung(self._register(proposal))

    def _resume_live(self, live: _Live) -> None:
        if live.rung in live.results:
            self._decide(live)
            if live.done:
                self._finish(live)
                return
        self._enqueue_rung(live)

    def _enqueue_rung(self, live: _Live) -> None:
        self.jobs.enqueue(f"trial/{live.number}/r{live.rung}", recipe=live.recipe, split=None,
                      limit=self.ladder.limits[live.rung])

    def _absorb(self, live: _Live, outcome: EvalOutcome) -> None:
        live.merge_seconds += outcome.merge_seconds
        live.eval_seconds += outcome.eval_seconds
        live.worker = outcome.worker
        if not outcome.ok:
            live.failure, live.done = outcome.reason, True
            return
        rung = int(outcome.key.rsplit("/r", 1)[1])
        live.results[rung] = outcome.results
        # items first, then the summary: a trial whose summary names a rung always has that rung's items
        self.store.write_items(_items_name(live.number), live.results)
        live.trial.set_user_attr("rungs", {str(r): self._rung_summary(res) for r, res in live.results.items()})
        self._record_rung(live.number, rung, outcome.results)

    def _rung_summary(self, results: Mapping[str, Any]) -> dict[str, Any]:
        values, stderrs = self._objective_vector(results)
        return {"values": values, "stderrs": stderrs, "suites": _summaries(results)}

    def _record_rung(self, number: int, rung: int, results: Mapping[str, Any]) -> None:
        values, stderrs = self._objective_vector(results)
        self.rung_scores[rung][number] = Scored(tuple(np.asarray(values) * self.signs), tuple(stderrs))

    def _decide(self, live: _Live) -> None:
        """Promote to the next rung, or stop here."""
        rung = live.rung
        me = self.rung_scores[rung][live.number]
        peers = [s for n, s in self.rung_scores[rung].items() if n != live.number]
        if self.ladder.promote(rung, me, peers):
            live.rung = rung + 1
            if self.exp.workers.mode == "async":
                self._enqueue_rung(live)
        else:
            live.done = True

    def _finish(self, live: _Live) -> None:
        from optuna.trial import TrialState

        result: dict[str, Any] = {"merge_seconds": live.merge_seconds, "eval_seconds": live.eval_seconds,
                                  "worker": live.worker}
        if live.failure is not None:
            result["failure"] = live.failure
            result["failed_rung"] = live.rung
            live.trial.set_user_attr("result", result)
            frozen = self.study.tell(live.number, state=TrialState.FAIL)
            self.optimizer.tell(live.number, None)
            self.failed += 1
            log.info("trial %d failed: %s", live.number, live.failure)
        else:
            rung = max(live.results)
            values, stderrs = self._objective_vector(live.results[rung])
            maximised = list(np.asarray(values) * self.signs)
            constraints = self._constraints(values)
            feasible = all(c <= 0 for c in constraints)
            result.update(objectives=values, stderrs=stderrs, maximised=maximised, constraints=constraints,
                          feasible=feasible, fidelity=rung)
            live.trial.set_user_attr("result", result)
            record_constraints(live.trial, constraints)
            frozen = self.study.tell(live.number, maximised)
            self.optimizer.tell(live.number, maximised, constraints)
            if rung == self.ladder.top and feasible:
                self.archive[live.number] = np.asarray(maximised)
        del self.live[live.number]
        self.finished += 1
        self._after_finish(frozen)

    # -- objectives, constraints ---------------------------------------------------------------------
    def _objective_vector(self, results: Mapping[str, Any]) -> tuple[list[float], list[float]]:
        """Natural-orientation objective values and standard errors from suite results."""
        values, stderrs = [], []
        for suite in self.exp.suite_names:
            r = results[suite]
            values.append(float(r["mean"]))
            stderrs.append(float(r["stderr"]) if r.get("stderr") is not None else 0.0)
        if self.exp.cost is not None:
            c, se = _cost(results, self.exp.suite_names, self.exp.cost.metric)
            values.append(c)
            stderrs.append(se)
        return values, [0.0 if math.isnan(s) else s for s in stderrs]

    def _constraints(self, values: Sequence[float]) -> list[float]:
        """<= 0 when satisfied: (reference - max_drop) - score for each suite objective."""
        c = self.exp.constraints
        if c.max_drop is None:
            return []
        out = []
        for i, suite in enumerate(self.exp.suite_names):
            ref_name = suite if c.relative_to == "specialist" and suite in self.references else "base"
            ref = self.references[ref_name]["search_values"][i]
            out.append(float(ref - c.max_drop - values[i]))
        return out

    # -- front, hypervolume, live outputs ------------------------------------------------------------
    def _update_front(self) -> None:
        numbers = list(self.archive)
        points = [self.archive[n] for n in numbers]
        self.front = sorted(numbers[i] for i in pareto_front(points)) if points else []
        self.hv = hypervolume([self.archive[n] for n in self.front], self.reference_point) if self.front else 0.0

    def _after_finish(self, frozen: "optuna.trial.FrozenTrial") -> None:
        from evomerge import report

        self.frozen[frozen.number] = frozen
        self._update_front()
        self.store.append_csv(self.store.trials_csv, report.trial_row(frozen, self.exp, self.genes))
        self.store.append_csv(self.store.hypervolume_csv, [self.finished, frozen.number, self.hv, len(self.front)])
        self._write_front()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed, front=len(self.front), hv=f"{self.hv:.4g}",
                                  cached=self.cache.hits, refresh=False)

    def _write_front(self, heldout: Mapping[str, Any] | None = None) -> None:
        from evomerge import report

        report.write_front_json(self.store.dir, self.exp, [self.frozen[n] for n in self.front], self.hv,
                                list(self.reference_point * self.signs), heldout)

    def _rebuild_outputs(self) -> None:
        """trials.csv and hypervolume.csv from the storage (a restart may have cut the last rows)."""
        from optuna.trial import TrialState

        from evomerge import report

        finished = [t for t in self.study.get_trials(deepcopy=False)
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL) and not t.user_attrs.get("discarded")]
        finished.sort(key=lambda t: (t.datetime_complete, t.number))
        rows, hv_rows = [], []
        self.archive.clear()
        for i, t in enumerate(finished, 1):
            self.frozen[t.number] = t
            rows.append(report.trial_row(t, self.exp, self.genes))
            if t.state == TrialState.FAIL:
                self.failed += 1
            elif t.user_attrs["result"]["fidelity"] == self.ladder.top and t.user_attrs["result"]["feasible"]:
                self.archive[t.number] = np.asarray(t.values)
            self._update_front()
            hv_rows.append([i, t.number, self.hv, len(self.front)])
        self.finished = len(finished)
        self.store.rewrite_csv(self.store.trials_csv, report.trial_header(self.exp, self.genes), rows)
        self.store.rewrite_csv(self.store.hypervolume_csv, ["evaluations", "trial", "hypervolume", "front_size"], hv_rows)
        self._write_front()

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.exp.budget, initial=self.finished, desc=f"search {self.exp.name}", unit="cand",
                    dynamic_ncols=True)

    def _evaluations_per_rung(self) -> list[int]:
        from evomerge.report import evaluations_per_rung

        return evaluations_per_rung(list(self.frozen.values()), self.ladder.top + 1)

    # -- held-out ------------------------------------------------------------------------------------
    def _score_heldout(self) -> None:
        """Score the front members and the references on the held-out split (kept in heldout.json)."""
        path = self.store.dir / "heldout.json"
        done = self.store.read_json(path.name) if path.is_file() else {"trials": {}, "references": {}}
        h = self.exp.heldout
        for number in self.front:
            if str(number) not in done["trials"]:
                recipe = self.frozen[number].user_attrs["recipe"]
                self.jobs.enqueue(f"heldout/{number}", recipe=recipe, split=h.split, limit=h.limit)
        for name, ckpt in (self._reference_models().items() if self.exp.references else []):
            if name not in done["references"]:
                self.jobs.enqueue(f"heldout-ref/{name}", checkpoint=ckpt, split=h.split, limit=h.limit)
        for outcome in self.jobs.drain():
            kind, ident = outcome.key.split("/")
            section = done["trials"] if kind == "heldout" else done["references"]
            if not outcome.ok:
                section[ident] = {"failure": outcome.reason}
            else:
                values, stderrs = self._objective_vector(outcome.results)
                section[ident] = {"values": values, "stderrs": stderrs,
                                  "items_file": self.store.write_items(f"heldout-{ident}", outcome.results)}
            write_json_atomic(path, done)
        self._write_front(done["trials"])


def _items_name(number: int) -> str:
    return f"trial-{number:05d}"


def _summaries(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {s: {"mean": r["mean"], "stderr": r["stderr"], "n": r["n"]} for s, r in results.items()}
    return out


def _completion_chars(item: Mapping[str, Any]) -> float:
    c = item.get("completion", "")
    if isinstance(c, list):
        return float(np.mean([len(x) for x in c])) if c else 0.0
    return float(len(c or ""))


def _cost(results: Mapping[str, Any], suites: Sequence[str], metric: str) -> tuple[float, float]:
    if metric == "seconds":
        return float(sum(results[s].get("seconds", 0.0) for s in suites)), 0.0
    lengths = [_completion_chars(it) for s in suites for it in results[s].get("items", [])]
    if not lengths:
        return 0.0, 0.0
    arr = np.asarray(lengths)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), se


def run_search(experiment: Experiment, run_dir: str | Path, **kwargs) -> RunSummary:
    return SearchRunner(experiment, run_dir, **kwargs).run()
