"""The search loop: ask the optimizer, score candidates rung by rung, promote, tell, keep the front.

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
- Scoring goes through the layer the sweep shares (evomerge.scoring); references and constraints
  (evomerge.search.references), resuming (evomerge.search.resume) and the run record
  (evomerge.search.record) are their own modules.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from evomerge.errors import EvomergeError, ExperimentError
from evomerge.memory_plan import PlanError
from evomerge.scoring.outcomes import EvalOutcome, JobKey, summaries, summaries_to_dict
from evomerge.scoring.pools import Pool
from evomerge.scoring.session import Scoring, reference_models
from evomerge.search import references as refs_
from evomerge.search.fidelity import FidelityLadder, Scored
from evomerge.search.objectives import objective_vector
from evomerge.search.optuna_samplers import record_constraints
from evomerge.search.pareto import hypervolume, pareto_front
from evomerge.search.record import HYPERVOLUME_HEADER, PLAN_JSON, RunRecord, evaluations_per_rung, trial_header, \
    trial_row, write_front_json
from evomerge.search.resume import DISCARDED, recover
from evomerge.search.storage import new_study_name, open_study, storage_url, stored_trials, study_name, \
    write_study_name
from evomerge.worker_plan import configure_workers, plan_search

if TYPE_CHECKING:
    import optuna

    from evomerge.search.experiment import Experiment
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
    swap_seconds: float = 0.0
    eval_seconds: float = 0.0
    worker: str = ""
    producers: dict[str, Any] = field(default_factory=dict)  # suite -> what produced its latest score
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


class SearchLoop:
    def __init__(self, experiment: "Experiment", run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 suite_factory: Callable | None = None, generator_factory: Callable | None = None,
                 pool: Pool | None = None, report: bool = True):
        self.exp = experiment
        self.record = RunRecord(run_dir)
        self.storage_url = storage_url(run_dir, experiment.storage)
        self.resume = resume
        self.progress = progress
        self.suite_factory = suite_factory
        self.generator_factory = generator_factory
        self._pool = pool
        self.write_report = report  # the plots and report.html (front.json and the CSVs are always written)
        self.ladder = FidelityLadder(tuple(experiment.fidelity.rungs), experiment.fidelity.z)
        self.signs = np.asarray(experiment.signs())
        self.n_obj = len(self.signs)
        self.live: dict[int, _Live] = {}
        self.rung_scores: dict[int, dict[int, Scored]] = {r: {} for r in range(self.ladder.top + 1)}
        self.archive: dict[int, np.ndarray] = {}  # feasible top-rung trials: number -> maximised objectives
        self.frozen: dict[int, "optuna.trial.FrozenTrial"] = {}  # finished trials
        self.finished = 0
        self.failed = 0
        self.hv = 0.0
        self.front: list[int] = []
        self._bar = None

    # -- setup: everything that can be wrong with the inputs is found before the run directory is written
    def _prepare(self) -> None:
        from evomerge.io.hub import with_local_checkpoints
        from evomerge.search.space import SearchSpace
        from evomerge.search.space_spec import load_space_spec
        from evomerge.search.warm_start import load_warm_start

        self.exp = exp = with_local_checkpoints(self.exp)  # Hub ids -> snapshot dirs, one commit for every worker
        if self.resume and self.record.exists():  # an optimizer left unset keeps the one the run started with
            self.exp = exp = exp.keeping_stored_optimizer(self.record.stored_experiment())
        spec = load_space_spec(exp.search_space, exp.space or None)
        self.space = SearchSpace.for_checkpoints(spec, exp.base, exp.models, seed=exp.seed, dtype=exp.dtype)
        paths = ([exp.base] if exp.base else []) + list(exp.models.values())
        self.scoring = Scoring.for_experiment(exp, paths, suite_factory=self.suite_factory,
                                              generator_factory=self.generator_factory)
        self.setup = self.scoring.worker_setup(exp.base, list(exp.models.values()))
        check_suites(self.setup)
        self.plan = plan_search(exp, spec)  # this machine's memory plan; the workers run with what it chose
        if not self.plan.fits:
            raise PlanError(f"memory plan: {self.plan.refusal} (evomerge plan prints the whole plan)")
        self.setup = configure_workers(self.setup, self.plan)
        if self._pool is None and exp.workers.kind == "local" and not exp.workers.ray_address:
            from evomerge.scoring.pools import check_main_guard

            check_main_guard()  # the local pool would fail the same way, after the run directory exists
        check_optimizer(exp, self.space)
        self.warm_candidates = load_warm_start(exp, self.space)
        if self.resume and not self.record.exists():
            self.record.check_resumable(exp)  # "no run to resume here", before the lock creates the directory
        self.lock = self.record.lock()  # before reading or writing the run: one process per run directory
        try:
            if self.resume:
                self.record.check_resumable(exp)
                self.study_name = study_name(self.record.dir)
            else:
                self.record.create(exp)
                self.study_name = new_study_name(exp.name)
                write_study_name(self.record.dir, self.study_name)
            # re-planned on every start (a resumed run may be on another machine): the plan the workers run with
            self.record.write_plan(self.plan.to_dict())
        except BaseException:
            self.lock.release()
            raise
        log.info("memory plan (%s): %s", PLAN_JSON, self.plan.summary())
        self.genes = [g.name for g in self.space.genes]

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        self._prepare()
        try:
            return self._run(t0)
        finally:
            self.lock.release()

    def _run(self, t0: float) -> RunSummary:
        self.pool = self._pool if self._pool is not None else self.scoring.open_pool(self.setup)
        self.jobs = self.scoring.queue(self.pool)
        try:
            self.references = refs_.score_references(self.exp, self.record, self.jobs, self.ladder.limits[-1])
            self.reference_point = refs_.reference_point(self.exp, self.references, self.signs)
            self.study, self.optimizer = self._build_optimizer()
            pending = [self._live_from(u) for u in recover(
                self.study, self.optimizer, self.genes, self.record, self.exp.search_space, self.rung_scores,
                self._scored, self.signs)]
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
            from evomerge.report import write_report

            write_report(self.record.dir)
        return RunSummary(self.record.dir, self.finished, self.failed, list(self.front), self.hv,
                          evaluations_per_rung(list(self.frozen.values()), self.ladder.top + 1),
                          self.scoring.cache.hits, time.perf_counter() - t0)

    def _build_optimizer(self) -> tuple["optuna.Study", "Optimizer"]:
        import optuna

        from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler, resumed_seed

        opt = self.exp.optimizer
        constrained = self.exp.constraints.max_drop is not None
        existing = len(stored_trials(self.storage_url, self.study_name)) if self.resume else 0
        metrics = [n if sign > 0 else f"{n} (negated)" for n, sign in zip(self.exp.objective_names, self.signs)]
        seed = resumed_seed(self.exp.seed, existing)
        if opt.name == "cmaes":
            from evomerge.search.cma import CMAESOptimizer

            study = open_study(self.storage_url, self.study_name, optuna.samplers.RandomSampler(seed=seed), self.n_obj,
                               metrics)
            refs = [np.asarray(r["search_values"]) * self.signs for r in self.references.values()] or None
            optimizer = CMAESOptimizer(study, self.space, self.n_obj, opt.population, self.exp.seed,
                                       self.exp.weights(), refs, opt.settings)
        elif opt.name == "additive":
            from evomerge.search.additive import AdditiveOptimizer

            # its draws are seeded by (seed, trial number), so a resumed run needs no reseeding
            study = open_study(self.storage_url, self.study_name, optuna.samplers.RandomSampler(seed=seed), self.n_obj,
                               metrics)
            optimizer = AdditiveOptimizer(study, self.space, self.n_obj, opt.population, self.exp.seed, opt.settings)
        else:
            sampler = build_sampler(opt.name, opt.population, seed, opt.settings, constrained, space=self.space)
            study = open_study(self.storage_url, self.study_name, sampler, self.n_obj, metrics)
            optimizer = OptunaOptimizer(opt.name, study, self.space, opt.population)
        from evomerge.search.warm_start import warm_started

        return study, warm_started(optimizer, study, self.space, self.exp, self.warm_candidates)

    def _live_from(self, unfinished) -> _Live:
        live = _Live(unfinished.number, unfinished.trial, unfinished.genome,
                     self.space.decode(unfinished.genome).to_dict(), results=unfinished.results)
        if live.results:
            live.rung = max(live.results)
        self.live[live.number] = live
        return live

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
                live = self.live[int(outcome.key.id)]
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
                self._absorb(self.live[int(outcome.key.id)], outcome)
            for live in batch:
                if not live.done and live.rung == rung:
                    self._decide(live)
        for live in batch:
            self._finish(live)

    # -- one trial: ask -> rungs -> promote -> tell ---------------------------------------------------
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
        if live.rung in live.results:  # stopped between rungs: decide again on the rung it finished
            self._decide(live)  # promoted: `_decide` queues the next rung (queueing it here too ran it twice)
            if live.done:
                self._finish(live)
            return
        self._enqueue_rung(live)

    def _enqueue_rung(self, live: _Live) -> None:
        self.jobs.enqueue(JobKey.trial(live.number, live.rung), recipe=live.recipe, split=None,
                          limit=self.ladder.limits[live.rung])

    def _absorb(self, live: _Live, outcome: EvalOutcome) -> None:
        live.merge_seconds += outcome.merge_seconds
        live.swap_seconds += outcome.swap_seconds
        live.eval_seconds += outcome.eval_seconds
        live.worker = outcome.worker
        if not outcome.ok:
            live.failure, live.done = outcome.reason, True
            return
        rung = outcome.key.rung
        live.results[rung] = outcome.results
        live.producers = outcome.producers_dict()
        # items first, then the summary: a trial whose summary names a rung always has that rung's items
        self.record.write_trial_items(live.number, live.results)
        live.trial.set_user_attr("rungs", {str(r): self._rung_summary(res) for r, res in live.results.items()})
        self.rung_scores[rung][live.number] = self._scored(outcome.results)

    def _rung_summary(self, results: Mapping[str, Any]) -> dict[str, Any]:
        values, stderrs = objective_vector(self.exp, results)
        return {"values": values, "stderrs": stderrs, "suites": summaries_to_dict(summaries(results))}

    def _scored(self, results: Mapping[str, Any]) -> Scored:
        values, stderrs = objective_vector(self.exp, results)
        return Scored(tuple(np.asarray(values) * self.signs), tuple(stderrs))

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

        result: dict[str, Any] = {"merge_seconds": live.merge_seconds, "swap_seconds": live.swap_seconds,
                                  "eval_seconds": live.eval_seconds, "worker": live.worker}
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
            values, stderrs = objective_vector(self.exp, live.results[rung])
            maximised = list(np.asarray(values) * self.signs)
            constraints = refs_.constraints(self.exp, self.references, values)
            feasible = all(c <= 0 for c in constraints)
            result.update(objectives=values, stderrs=stderrs, maximised=maximised, constraints=constraints,
                          feasible=feasible, fidelity=rung, scored_by=live.producers)
            live.trial.set_user_attr("result", result)
            record_constraints(live.trial, constraints)
            frozen = self.study.tell(live.number, maximised)
            self.optimizer.tell(live.number, maximised, constraints)
            if rung == self.ladder.top and feasible:
                self.archive[live.number] = np.asarray(maximised)
        del self.live[live.number]
        self.finished += 1
        self._after_finish(frozen)

    # -- front, hypervolume, live outputs ------------------------------------------------------------
    def _update_front(self) -> None:
        numbers = list(self.archive)
        points = [self.archive[n] for n in numbers]
        self.front = sorted(numbers[i] for i in pareto_front(points)) if points else []
        self.hv = hypervolume([self.archive[n] for n in self.front], self.reference_point) if self.front else 0.0

    def _after_finish(self, frozen: "optuna.trial.FrozenTrial") -> None:
        self.frozen[frozen.number] = frozen
        self._update_front()
        self.record.append_csv(self.record.trials_csv, trial_row(frozen, self.exp, self.genes))
        self.record.append_csv(self.record.hypervolume_csv, [self.finished, frozen.number, self.hv, len(self.front)])
        self._write_front()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed, front=len(self.front), hv=f"{self.hv:.4g}",
                                  cached=self.scoring.cache.hits, refresh=False)

    def _write_front(self, heldout: Mapping[str, Any] | None = None) -> None:
        write_front_json(self.record.dir, self.exp, [self.frozen[n] for n in self.front], self.hv,
                         list(self.reference_point * self.signs), heldout)

    def _rebuild_outputs(self) -> None:
        """trials.csv and hypervolume.csv from the storage (a restart may have cut the last rows)."""
        from optuna.trial import TrialState

        finished = [t for t in self.study.get_trials(deepcopy=False)
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL) and not t.user_attrs.get(DISCARDED)]
        finished.sort(key=lambda t: (t.datetime_complete, t.number))
        rows, hv_rows = [], []
        self.archive.clear()
        for i, t in enumerate(finished, 1):
            self.frozen[t.number] = t
            rows.append(trial_row(t, self.exp, self.genes))
            if t.state == TrialState.FAIL:
                self.failed += 1
            elif t.user_attrs["result"]["fidelity"] == self.ladder.top and t.user_attrs["result"]["feasible"]:
                self.archive[t.number] = np.asarray(t.values)
            self._update_front()
            hv_rows.append([i, t.number, self.hv, len(self.front)])
        self.finished = len(finished)
        self.record.rewrite_csv(self.record.trials_csv, trial_header(self.exp, self.genes), rows)
        self.record.rewrite_csv(self.record.hypervolume_csv, HYPERVOLUME_HEADER, hv_rows)
        self._write_front()

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.exp.budget, initial=self.finished, desc=f"search {self.exp.name}", unit="cand",
                    dynamic_ncols=True)

    # -- held-out ------------------------------------------------------------------------------------
    def _score_heldout(self) -> None:
        """Score the front members and the references on the held-out split (kept in heldout.json)."""
        done = self.record.read_heldout()
        h = self.exp.heldout
        for number in self.front:
            if str(number) not in done["trials"]:
                recipe = self.frozen[number].user_attrs["recipe"]
                self.jobs.enqueue(JobKey.trial_heldout(number), recipe=recipe, split=h.split, limit=h.limit)
        for name, ckpt in (reference_models(self.exp.base, self.exp.models).items() if self.exp.references else []):
            if name not in done["references"]:
                self.jobs.enqueue(JobKey.reference(name, "heldout"), checkpoint=ckpt, split=h.split, limit=h.limit)
        for outcome in self.jobs.drain():
            ident = str(outcome.key.id)
            section = done["trials"] if outcome.key.subject == "trial" else done["references"]
            if not outcome.ok:
                section[ident] = {"failure": outcome.reason}
            else:
                values, stderrs = objective_vector(self.exp, outcome.results)
                section[ident] = {"values": values, "stderrs": stderrs,
                                  "items_file": self.record.write_items(f"heldout-{ident}", outcome.results),
                                  "scored_by": outcome.producers_dict()}
            self.record.write_heldout(done)
        self._write_front(done["trials"])


def check_suites(setup) -> None:
    """Every objective's suite can be built (an unknown kind or bad settings fail here, not in the workers
    after the run directory exists). With the default factory only the suite class is resolved: building
    a suite may load its data set, which the workers do anyway."""
    from evaluators.errors import EvaluatorError
    from evaluators.registry import suite_class
    from evaluators.suites.base import SuiteConfig

    for name, cfg in setup.suites.items():
        try:
            config = SuiteConfig.model_validate(cfg)
            if setup.suite_factory is None:
                suite_class(config.kind)
            else:
                setup.suite_factory(name, config)
        except EvaluatorError as exc:  # one line on the command line, naming the objective
            raise ExperimentError(f"objectives.{name}: {exc}") from None


def check_optimizer(exp: "Experiment", space) -> None:
    """The optimizer's settings are valid (the sampler is built once and dropped)."""
    from evomerge.search.optuna_samplers import build_sampler

    opt = exp.optimizer
    if opt.name == "additive":
        from evomerge.search.additive import check_settings

        check_settings(opt.settings)
    elif opt.name != "cmaes":
        build_sampler(opt.name, opt.population, exp.seed, opt.settings, exp.constraints.max_drop is not None,
                      space=space)


def run_search(experiment: "Experiment", run_dir: str | Path, **kwargs) -> RunSummary:
    return SearchLoop(experiment, run_dir, **kwargs).run()
