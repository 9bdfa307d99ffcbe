"""CMA-ES (the `cma` package) over the genome vector, for one or several objectives.

Genome: `SearchSpace.to_vector` maps every genome to [0, 1]^d. Float genes are searched by CMA-ES in
their [0, 1] coordinates (`bounds: [0, 1]`, so every asked point decodes to a valid recipe).

Categorical genes (a layer group's merge method, categorical parameters) are searched, by default
(`categorical: distribution`), as in CatCMA (Hamano et al., GECCO 2024): next to its Gaussian, each
instance keeps one categorical distribution per categorical gene and draws every candidate's options from
it (stratified within a generation). Each distribution moves by the IGO natural-gradient step with the
learning rate CMA-ES uses for its mean (c_m = 1), which for a categorical distribution makes it the
rank-weighted frequency of the options among the better half of the candidates; CatCMA's margin then
keeps every option's probability at least (1 - 0.73^(1/n)) / (k - 1) (n categorical genes, k options),
so no option is ever ruled out for good. (CatCMA itself takes an adaptive trust-region step, ASNG; it
needs about five generations to grow its step, and merge budgets give an instance about ten, so on
the search-efficiency benchmark it learned the method choices visibly later.) `categorical: scores`
is the former encoding: CMA-ES searches one [0, 1] score per option, decoded by argmax. It learns a
method choice more slowly: those scores move with the float genes' step size, and nothing keeps an
option that fell behind in play.

Several objectives: decomposition, as in MOEA/D (Zhang & Li 2007) with CMA-ES as the inner solver.
K independent CMA-ES instances each minimise one augmented Chebyshev scalarisation
    g_w(y) = max_k w_k (z_k - y_k) / s_k  +  rho * sum_k w_k (z_k - y_k) / s_k
of the (maximised, normalised) objectives. The first weight vector is the experiment's objective
weights; the others are seeded Dirichlet draws, so the instances pull towards different parts of the
front while every evaluation feeds the one shared Pareto archive. Chebyshev (unlike a weighted sum)
reaches non-convex parts of the front. The ideal point z and scales s are fixed for the run (from the
reference models' scores), so a scalarised value never changes after the fact and a resumed run can
replay every instance exactly. With one objective this is plain CMA-ES (CatCMA).

The instances share what they find (`share`, on by default), in two ways:
- when an instance starts a generation, the best candidate any other instance has scored under this
  instance's scalarisation is injected (`cma.inject`: the direction from the mean towards it becomes one
  of the generation's samples, with that candidate's categorical options), as neighbours share
  solutions in MOEA/D;
- the categorical distributions learn from every evaluation, not only from their own instance's: just
  before an instance samples a generation, its distributions take their step from all the candidates
  finished since its previous step (its own last generation, the other instances' candidates and the
  initial design's), ranked under its own scalarisation. A candidate drawn from another distribution
  counts with the importance weight min(1, p_own(its options) / p_drawn(its options)) (truncated
  importance sampling, the usual off-policy estimate of the same step), so it counts fully while the
  instances' distributions agree and fades as they part. Each step so rests on about K times as many
  evaluations; a merge's method choices matter most, objectives often agree on some of them, and the
  instances no longer learn each one K times over.
(The Gaussians cannot learn from other instances' samples the same way: `cma` takes a generation's own
samples only, and feeding it already scored candidates as forced injections measured worse.)

An optional space-filling initial design (`initial_design`: that many Latin hypercube points, default
0) is evaluated before the instances start; each instance then starts its mean at the design point best
under its own scalarisation, and its categorical distributions learn from the whole design. On the
search-efficiency benchmark it did not pay for itself (the instances' first generations already sample
broadly), hence the default.

Defaults suit merge budgets (hundreds of evaluations in tens of dimensions): separable CMA-ES
(`CMA_diagonal`, Ros & Hansen 2008) because a full covariance needs ~d^2 evaluations to learn, and
K = number of objectives scalarisations. Any `cma` option can be passed in `cma_options`; it applies to
the float genes (and, with `categorical: scores`, to the scores).

Infeasible candidates (constraints > 0) rank behind every feasible one, by total violation; failed
candidates rank last (and never pull a categorical distribution towards their options).

Each instance draws from its own numpy random state (swapped in around every call into `cma`, which
uses numpy's global generator, and around its categorical draws), so instances are independent of each
other and of the rest of the process: the same seed and the same results give the same run, and a
restart can replay it. What a generation took from outside the instance is recorded on its trials (the
injected trial, the trials its categorical step learned from, each candidate's draw probability), so
the replay does not depend on the order in which the other instances' results came in.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from evomerge.errors import ExperimentError
from evomerge.search.codec import write_option_scores
from evomerge.search.base import Optimizer, Proposal, suggest_genome
from evomerge.search.categorical import FAILED, CategoricalDistributions
from evomerge.search.decomposition import Scalarization, normalisation, weight_vectors

if TYPE_CHECKING:
    import optuna

    from evomerge.search.space import SearchSpace

INFEASIBLE = 1e3  # added to a scalarised value per unit of normalised constraint violation (plus this offset)
SETTINGS = ("sigma0", "scalarizations", "weights", "rho", "scalarization", "cma_options", "share", "initial_design",
            "categorical")
CATEGORICAL_MODES = ("distribution", "scores")
MAX_INITIAL_DESIGN = 10_000


def latin_hypercube(count: int, dimension: int, seed: int) -> list[np.ndarray]:
    """`count` seeded points in [0, 1]^dimension, one in each of `count` equal slices of every coordinate."""
    rng = np.random.default_rng([seed, 4243])
    strata = np.stack([rng.permutation(count) for _ in range(dimension)], axis=1) if count else np.zeros((0, dimension))
    return list((strata + rng.random((count, dimension))) / max(count, 1))


@dataclass
class _Instance:
    index: int
    scalarize: Scalarization
    es: Any  # cma.CMAEvolutionStrategy (None when the space has no float gene)
    rng_state: dict
    cats: CategoricalDistributions | None = None  # None: no categorical gene, or `categorical: scores`
    generation: int = 0
    solutions: list[np.ndarray] = field(default_factory=list)  # the current generation, as asked (full vectors)
    asked: list[np.ndarray] = field(default_factory=list)  # their float coordinates, as `cma` returned them
    log_q: list[float] = field(default_factory=list)  # log probability of each one's options under `cats`
    unassigned: list[int] = field(default_factory=list)  # indices of `solutions` without a trial yet
    injected: int | None = None  # trial injected into the current generation (from another instance)
    received: set[int] = field(default_factory=set)  # trials ever injected here (each is used once)
    learned: set[int] = field(default_factory=set)  # trials the categorical distributions have learned from
    pool: list[int] = field(default_factory=list)  # trials the current generation's categorical step used
    fitness: dict[int, float] = field(default_factory=dict)  # index in generation -> scalarised value


class CMAESOptimizer(Optimizer):
    name = "cmaes"

    def __init__(self, study: "optuna.Study", space: "SearchSpace", n_objectives: int, population: int, seed: int,
                 objective_weights: Sequence[float], reference_scores: Sequence[Sequence[float]] | None = None,
                 settings: dict[str, Any] | None = None):
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ExperimentError(f"optimizer.settings: CMA-ES has no setting(s) {unknown}; known: {list(SETTINGS)}")
        self.study = study
        self.space = space
        self.population = population
        sigma0 = float(settings.get("sigma0", 0.25))
        count = int(settings.get("scalarizations", n_objectives))
        self.share = bool(settings.get("share", True))
        first = settings.get("weights", objective_weights)
        if len(first) != n_objectives:
            raise ExperimentError(f"optimizer.settings.weights: {len(first)} values for {n_objectives} objectives")
        weights = weight_vectors(first, max(count, 1), seed)
        ideal, scale = normalisation(reference_scores, n_objectives)
        kind = settings.get("scalarization", "chebyshev")
        if kind not in ("chebyshev", "weighted_sum"):
            raise ExperimentError(f"optimizer.settings.scalarization: {kind!r} is not 'chebyshev' or 'weighted_sum'")
        mode = settings.get("categorical", "distribution")
        if mode not in CATEGORICAL_MODES:
            raise ExperimentError(f"optimizer.settings.categorical: {mode!r} is not one of {list(CATEGORICAL_MODES)}")
        size = settings.get("initial_design", 0)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_INITIAL_DESIGN:
            raise ExperimentError(f"optimizer.settings.initial_design: {size!r} is not a whole number of "
                                  f"evaluations in [0, {MAX_INITIAL_DESIGN}]")
        # vector layout: float coordinates go to CMA-ES; categorical genes to distributions (or, as scores, to CMA-ES)
        self._cats: list[tuple[int, int]] = []  # (first coordinate, options) of each categorical gene
        cont, offset = [], 0
        for g in space.genes:
            width = len(g.choices) if g.categorical else 1
            if g.categorical and mode == "distribution":
                self._cats.append((offset, width))
            else:
                cont += range(offset, offset + width)
            offset += width
        self._cont = np.array(cont, int)
        self._sigma0 = sigma0
        self._cma_options = {"bounds": [0.0, 1.0], "popsize": population, "verbose": -9, "seed": np.nan,
                             "CMA_diagonal": True, **settings.get("cma_options", {})}
        rho = float(settings.get("rho", 0.05))
        self.instances: list[_Instance] = [
            _Instance(i, Scalarization(w, ideal, scale, kind, rho), None,
                      np.random.RandomState((seed * 1009 + i * 7 + 1) % 2**32).get_state())
            for i, w in enumerate(weights)]
        self._owner: dict[int, tuple[int, int, int]] = {}  # trial number -> (instance, generation, index)
        self._next = 0  # round robin over instances
        self._x: dict[int, np.ndarray] = {}  # trial number -> its vector
        self._log_q: dict[int, float] = {}  # trial number -> log probability of its options where it was drawn
        self._archive: dict[int, tuple[int, list[float] | None, list[float]]] = {}  # number -> (instance, y, constraints)
        self._design = latin_hypercube(size, space.dimension, seed)
        self._design_unassigned = list(range(size))
        self._design_owner: dict[int, int] = {}  # trial number -> design index, while being evaluated
        self._design_trials: dict[int, int] = {}  # design index -> its finished trial
        self._uniform_log_q = -float(sum(math.log(k) for _, k in self._cats))  # a design point's options
        self._started = False
        if not size:
            self._start_instances()

    @property
    def batch_size(self) -> int:
        return self.population * len(self.instances)

    # -- ask / tell ----------------------------------------------------------------------------------
    def ask(self) -> Proposal | None:
        if self._design_unassigned:
            return self._hand_out_design()
        if not self._started:
            if len(self._design_trials) < len(self._design):
                return None  # the instances start from the design's results
            self._start_instances()
        for step in range(len(self.instances)):
            inst = self.instances[(self._next + step) % len(self.instances)]
            if not inst.solutions:
                self._new_generation(inst)
            if inst.unassigned:
                self._next = (inst.index + 1) % len(self.instances)
                return self._hand_out(inst)
        return None

    def _hand_out_design(self) -> Proposal:
        idx = self._design_unassigned.pop(0)
        x = self._design[idx]
        values = self.space.from_vector(x)
        attrs = {"cma_design": idx, "cma_x": [float(v) for v in x]}
        self.study.enqueue_trial(values, user_attrs=attrs, skip_if_exists=False)
        trial = self.study.ask()
        genome = suggest_genome(trial, self.space)
        self._design_owner[trial.number] = idx
        self._x[trial.number] = x
        self._log_q[trial.number] = self._uniform_log_q  # Latin hypercube scores: every option equally likely
        return Proposal(trial, genome, attrs)

    def _start_instances(self) -> None:
        """Create every instance's CMA-ES, its mean at the design point best under its scalarisation (the
        box centre without a design). The chosen genome is re-encoded (`to_vector`), so with
        `categorical: scores` a categorical gene starts with the same margin (0.75 vs 0.25) whichever
        scores the design drew. Categorical distributions start uniform (they learn from the design when
        the first generation is asked)."""
        import cma

        self._started = True
        for inst in self.instances:
            x0 = np.full(self.space.dimension, 0.5)
            scored = [(self._fitness(inst, self._archive[n][1], self._archive[n][2]), n)
                      for n in self._design_trials.values()]
            if scored and min(scored)[0] < FAILED:
                best = min(scored)[1]
                x0 = self.space.to_vector(self.space.from_vector(self._x[best]))
                inst.received.add(best)  # already its starting point: never injected
            if self._cats:
                inst.cats = CategoricalDistributions([k for _, k in self._cats])
            if len(self._cont):
                with _random_state(inst.rng_state) as holder:
                    inst.es = cma.CMAEvolutionStrategy(x0[self._cont], self._sigma0, self._cma_options)
                inst.rng_state = holder["state"]

    def _options(self, x: np.ndarray) -> list[int]:
        """The option index of every categorical gene (argmax of its scores) in vector x."""
        return [int(np.argmax(x[o:o + k])) for o, k in self._cats]

    def _assemble(self, cont: np.ndarray, options: Sequence[int]) -> np.ndarray:
        """Full vector: the float coordinates, and each categorical gene encoded as `to_vector` does."""
        x = np.zeros(self.space.dimension)
        x[self._cont] = cont
        for (o, k), c in zip(self._cats, options):
            write_option_scores(x, o, k, c)
        return x

    def _learn(self, inst: _Instance, pool: Sequence[int]) -> None:
        """The categorical step before a generation: from these finished trials, ranked under this
        instance's scalarisation, each weighted by min(1, p_own / p_drawn) of its options."""
        inst.pool = list(pool)
        inst.learned.update(pool)
        if inst.cats is None or not pool:
            return
        options = [self._options(self._x[n]) for n in pool]
        fitness = [self._fitness(inst, self._archive[n][1], self._archive[n][2]) for n in pool]
        importance = [math.exp(min(0.0, inst.cats.log_probability(o) - self._log_q[n])) for o, n in zip(options, pool)]
        inst.cats.update(options, fitness, importance)

    def _learnable(self, inst: _Instance) -> list[int]:
        """Finished trials this instance's categorical distributions have not learned from yet (its own;
        with `share`, also the other instances' and the initial design's), in trial order."""
        if inst.cats is None:
            return []
        return sorted(n for n, (owner, _, _) in self._archive.items()
                      if n not in inst.learned and (owner == inst.index or self.share))

    def _new_generation(self, inst: _Instance, replay: tuple[int | None, list[int]] | None = None) -> None:
        source, pool = replay if replay is not None else (self._best_elsewhere(inst), self._learnable(inst))
        self._learn(inst, pool)
        inst.injected = source
        if source is not None:
            inst.received.add(source)
        with _random_state(inst.rng_state) as holder:
            if inst.es is not None:
                if source is not None:
                    inst.es.inject([self._x[source][self._cont]])
                inst.asked = [np.asarray(x, float) for x in inst.es.ask()]
            else:
                inst.asked = [np.zeros(0) for _ in range(self.population)]
            options = inst.cats.sample(len(inst.asked)) if inst.cats is not None else None
        inst.rng_state = holder["state"]
        if inst.cats is None:
            inst.solutions, inst.log_q = list(inst.asked), [0.0] * len(inst.asked)
        else:
            if source is not None:
                options[0] = self._options(self._x[source])  # `cma` puts an injected solution first
            inst.solutions = [self._assemble(x, o) for x, o in zip(inst.asked, options)]
            inst.log_q = [inst.cats.log_probability(o) for o in options]
        inst.unassigned = list(range(len(inst.solutions)))

    def _hand_out(self, inst: _Instance) -> Proposal:
        idx = inst.unassigned.pop(0)
        x = inst.solutions[idx]
        values = self.space.from_vector(x)
        attrs = {"cma_instance": inst.index, "cma_generation": inst.generation, "cma_index": idx,
                 "cma_x": [float(v) for v in x], "cma_injected": inst.injected}
        if inst.cats is not None:
            attrs.update(cma_log_q=inst.log_q[idx], cma_learned=inst.pool)
        self.study.enqueue_trial(values, user_attrs=attrs, skip_if_exists=False)
        trial = self.study.ask()
        genome = suggest_genome(trial, self.space)
        self._owner[trial.number] = (inst.index, inst.generation, idx)
        self._x[trial.number] = x
        self._log_q[trial.number] = inst.log_q[idx]
        return Proposal(trial, genome, attrs)

    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        ok = objectives is not None and bool(np.all(np.isfinite(objectives)))
        if trial_number in self._design_owner:
            self._design_trials[self._design_owner.pop(trial_number)] = trial_number
            self._archive[trial_number] = (-1, list(objectives) if ok else None, list(constraints))
            return
        owner = self._owner.pop(trial_number, None)
        if owner is None:
            return  # not ours (e.g. a reference evaluation)
        inst = self.instances[owner[0]]
        if owner[1] != inst.generation:
            return  # a straggler from a finished generation (cannot happen in normal runs)
        self._archive[trial_number] = (inst.index, list(objectives) if ok else None, list(constraints))
        inst.fitness[owner[2]] = self._fitness(inst, objectives, constraints)
        if len(inst.fitness) == len(inst.solutions):
            self._finish_generation(inst)

    def _best_elsewhere(self, inst: _Instance) -> int | None:
        """The trial of another instance that is best under this instance's scalarisation, if new here."""
        if not self.share or len(self.instances) < 2:
            return None
        scored = [(self._fitness(inst, y, c), n) for n, (owner, y, c) in self._archive.items() if y is not None]
        if not scored:
            return None
        best, number = min(scored)
        if self._archive[number][0] == inst.index or number in inst.received:
            return None
        return number

    def _fitness(self, inst: _Instance, objectives, constraints) -> float:
        if objectives is None or not np.all(np.isfinite(objectives)):
            return FAILED
        value = inst.scalarize(objectives)
        violation = float(np.sum(np.maximum(np.asarray(constraints, float), 0.0))) if len(constraints) else 0.0
        return value + INFEASIBLE * (1.0 + violation) if violation > 0 else value

    def _finish_generation(self, inst: _Instance) -> None:
        """The Gaussian's update. (The categorical distributions learn from this generation, with whatever
        else finished meanwhile, when the next one is asked.)"""
        fitness = [inst.fitness[i] for i in range(len(inst.solutions))]
        if inst.es is not None:
            with _random_state(inst.rng_state) as holder:
                inst.es.tell(inst.asked, fitness)
            inst.rng_state = holder["state"]
        inst.generation += 1
        inst.solutions, inst.asked, inst.log_q, inst.fitness, inst.unassigned = [], [], [], {}, []

    # -- restart ---------------------------------------------------------------------------------------
    def restore(self, trials: Sequence["optuna.trial.FrozenTrial"]) -> None:
        """Replay every instance generation by generation from the stored trials (same asks, same tells).

        `trials` are the valid trials of the study (finished, or running and about to be re-evaluated);
        slots of the current generation (or of the initial design) that have none are handed out again by
        `ask`. What a generation took from other instances (its injected trial, the trials its categorical
        step learned from) is read from its trials, and every finished trial's result is known before the
        replay starts, so each instance replays on its own."""
        import optuna

        def result(t: "optuna.trial.FrozenTrial") -> tuple[list[float] | None, list[float]]:
            res = t.user_attrs.get("result", {})
            return (res.get("maximised") if t.state == optuna.trial.TrialState.COMPLETE else None,
                    list(res.get("constraints", ())))

        design = sorted((t for t in trials if "cma_design" in t.user_attrs), key=lambda t: t.number)
        for t in design:
            idx = t.user_attrs["cma_design"]
            if idx not in self._design_unassigned or not np.allclose(t.user_attrs["cma_x"], self._design[idx], rtol=0, atol=1e-9):
                raise ExperimentError(f"resume: trial {t.number} is not point {idx} of this run's CMA-ES initial design; "
                                      "the optimizer settings, seed or search space changed since the run started")
            self._design_unassigned.remove(idx)
            self._design_owner[t.number] = idx
            self._x[t.number] = self._design[idx]
            self._log_q[t.number] = self._uniform_log_q
        for t in design:
            if t.state.is_finished():
                self.tell(t.number, *result(t))  # running ones stay owned, to be told when re-scored
        if not self._started and len(self._design_trials) == len(self._design):
            self._start_instances()

        by_slot: dict[tuple[int, int, int], optuna.trial.FrozenTrial] = {}
        for t in trials:
            if "cma_instance" in t.user_attrs:
                if ("cma_log_q" in t.user_attrs) != bool(self._cats):
                    mode = "scores" if self._cats else "distribution"
                    raise ExperimentError(f"resume: trial {t.number} was proposed by CMA-ES with `categorical: {mode}` "
                                          f"(categorical genes searched as {'scores' if self._cats else 'distributions'}); "
                                          f"set optimizer.settings.categorical: {mode} to resume this run")
                by_slot[(t.user_attrs["cma_instance"], t.user_attrs["cma_generation"], t.user_attrs["cma_index"])] = t
                self._x[t.number] = np.asarray(t.user_attrs["cma_x"], float)  # injections may name any instance's trial
                self._log_q[t.number] = float(t.user_attrs.get("cma_log_q", 0.0))
                if t.state.is_finished():  # the categorical steps may have learned from any instance's trial
                    y, c = result(t)
                    self._archive[t.number] = (t.user_attrs["cma_instance"], y if y is None else list(y), c)
        for inst in self.instances:
            while True:
                slots = [k for k in by_slot if k[0] == inst.index and k[1] == inst.generation]
                if not slots:
                    break
                first = by_slot[min(slots)]
                pool = list(first.user_attrs.get("cma_learned", []))
                unknown = [n for n in pool if n not in self._archive]
                if unknown:
                    raise ExperimentError(f"resume: CMA-ES instance {inst.index} learned from trial(s) {unknown} in "
                                          f"generation {inst.generation}, which the study does not hold as finished")
                self._new_generation(inst, (first.user_attrs.get("cma_injected"), pool))
                for _, _, idx in sorted(slots):
                    t = by_slot[(inst.index, inst.generation, idx)]
                    if not np.allclose(t.user_attrs["cma_x"], inst.solutions[idx], rtol=0, atol=1e-9):
                        raise ExperimentError(
                            f"resume: CMA-ES instance {inst.index} does not replay trial {t.number} of generation "
                            f"{inst.generation}; the optimizer settings, seed or search space changed since the run started"
                        )
                    self._owner[t.number] = (inst.index, inst.generation, idx)
                    inst.unassigned.remove(idx)
                generation = inst.generation
                for _, _, idx in sorted(slots):
                    t = by_slot[(inst.index, generation, idx)]
                    if t.state.is_finished():
                        self.tell(t.number, *result(t))
                if inst.generation == generation:
                    break  # the generation is still open: its running trials stay owned, to be told when re-scored
        if by_slot:  # continue the round robin after the instance that asked last
            last = max(by_slot.values(), key=lambda t: t.number)
            self._next = (last.user_attrs["cma_instance"] + 1) % len(self.instances)


@contextlib.contextmanager
def _random_state(state) -> Iterator[dict]:
    """Run with numpy's global generator set to `state`; the advanced state is returned in holder['state']."""
    saved = np.random.get_state()
    np.random.set_state(state)
    holder: dict[str, Any] = {}
    try:
        yield holder
    finally:
        holder["state"] = np.random.get_state()
        np.random.set_state(saved)
