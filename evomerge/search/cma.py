"""CMA-ES (the `cma` package) over the genome vector, for one or several objectives.

Genome: `SearchSpace.to_vector` maps every genome to [0, 1]^d (categorical genes as one score per
choice, decoded by argmax), and CMA-ES searches that box (`bounds: [0, 1]`, so every asked point
decodes to a valid recipe).

Several objectives: decomposition, as in MOEA/D (Zhang & Li 2007) with CMA-ES as the inner solver.
K independent CMA-ES instances each minimise one augmented Chebyshev scalarisation
    g_w(y) = max_k w_k (z_k - y_k) / s_k  +  rho * sum_k w_k (z_k - y_k) / s_k
of the (maximised, normalised) objectives. The first weight vector is the experiment's objective
weights; the others are seeded Dirichlet draws, so the instances pull towards different parts of the
front while every evaluation feeds the one shared Pareto archive. Chebyshev (unlike a weighted sum)
reaches non-convex parts of the front. The ideal point z and scales s are fixed for the run (from the
reference models' scores), so a scalarised value never changes after the fact and a resumed run can
replay every instance exactly. With one objective this is plain CMA-ES.

The instances share what they find: when an instance starts a generation, the best candidate any
other instance has scored under this instance's scalarisation is injected (`cma.inject`: the
direction from the mean towards it becomes one of the generation's samples), so every evaluation
can pull every instance, as neighbours share solutions in MOEA/D.

Defaults suit merge budgets (hundreds of evaluations in tens of dimensions): separable CMA-ES
(`CMA_diagonal`, Ros & Hansen 2008) because a full covariance needs ~d^2 evaluations to learn, and
K = number of objectives scalarisations. Any `cma` option can be passed in `cma_options`.

Infeasible candidates (constraints > 0) rank behind every feasible one, by total violation; failed
candidates rank last.

Each instance draws from its own numpy random state (swapped in around every call into `cma`, which
uses numpy's global generator), so instances are independent of each other and of the rest of the
process: the same seed and the same results give the same run, and a restart can replay it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from evomerge.errors import ExperimentError
from evomerge.search.base import Optimizer, Proposal, suggest_genome

if TYPE_CHECKING:
    import optuna

    from evomerge.genome import SearchSpace

INFEASIBLE = 1e3  # added to a scalarised value per unit of normalised constraint violation (plus this offset)
FAILED = 1e6  # a failed evaluation ranks behind everything that produced numbers
SETTINGS = ("sigma0", "scalarizations", "weights", "rho", "scalarization", "cma_options", "share")


@dataclass
class Scalarization:
    """g_w(y) for maximised objectives y (smaller g is better)."""

    weights: np.ndarray
    ideal: np.ndarray
    scale: np.ndarray
    kind: str = "chebyshev"
    rho: float = 0.05

    def __call__(self, y: Sequence[float]) -> float:
        gap = self.weights * (self.ideal - np.asarray(y, float)) / self.scale
        if self.kind == "weighted_sum":
            return float(gap.sum())
        return float(gap.max() + self.rho * gap.sum())


def normalisation(reference_scores: Sequence[Sequence[float]] | None, n_obj: int) -> tuple[np.ndarray, np.ndarray]:
    """Ideal point and scales from the reference models' (maximised) scores: the spread of the references
    sets the scale, and the ideal sits one scale above the best of them. Without references: accuracies
    in [0, 1] are assumed (ideal 1, scale 1)."""
    if not reference_scores:
        return np.ones(n_obj), np.ones(n_obj)
    refs = np.asarray(reference_scores, float)
    hi, lo = refs.max(axis=0), refs.min(axis=0)
    scale = np.maximum(hi - lo, np.maximum(0.05 * np.abs(hi), 1e-3))
    return hi + scale, scale


def weight_vectors(first: Sequence[float], count: int, seed: int) -> np.ndarray:
    """`first` (normalised) and then count-1 seeded Dirichlet(1) draws on the simplex."""
    first = np.asarray(first, float)
    if first.sum() <= 0:
        first = np.ones_like(first)
    rows = [first / first.sum()]
    rng = np.random.default_rng([seed, 7919])
    rows += [rng.dirichlet(np.ones(len(first))) for _ in range(count - 1)]
    return np.vstack(rows)


@dataclass
class _Instance:
    index: int
    scalarize: Scalarization
    es: Any  # cma.CMAEvolutionStrategy
    rng_state: dict
    generation: int = 0
    solutions: list[np.ndarray] = field(default_factory=list)  # the current generation, as asked
    unassigned: list[int] = field(default_factory=list)  # indices of `solutions` without a trial yet
    injected: int | None = None  # trial injected into the current generation (from another instance)
    received: set[int] = field(default_factory=set)  # trials ever injected here (each is used once)
    fitness: dict[int, float] = field(default_factory=dict)  # index in generation -> scalarised value


class CMAESOptimizer(Optimizer):
    name = "cmaes"

    def __init__(self, study: "optuna.Study", space: "SearchSpace", n_objectives: int, population: int, seed: int,
                 objective_weights: Sequence[float], reference_scores: Sequence[Sequence[float]] | None = None,
                 settings: dict[str, Any] | None = None):
        import cma

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
        x0 = np.full(space.dimension, 0.5)
        self.instances: list[_Instance] = []
        for i, w in enumerate(weights):
            rng = np.random.RandomState((seed * 1009 + i * 7 + 1) % 2**32)
            opts = {"bounds": [0.0, 1.0], "popsize": population, "verbose": -9, "seed": np.nan,
                    "CMA_diagonal": True, **settings.get("cma_options", {})}
            with _random_state(rng.get_state()) as holder:
                es = cma.CMAEvolutionStrategy(x0, sigma0, opts)
            self.instances.append(_Instance(i, Scalarization(w, ideal, scale, kind, float(settings.get("rho", 0.05))),
                                            es, holder["state"]))
        self._owner: dict[int, tuple[int, int, int]] = {}  # trial number -> (instance, generation, index)
        self._next = 0  # round robin over instances
        self._x: dict[int, np.ndarray] = {}  # trial number -> its vector
        self._archive: dict[int, tuple[int, list[float] | None, list[float]]] = {}  # number -> (instance, y, constraints)

    @property
    def batch_size(self) -> int:
        return self.population * len(self.instances)

    # -- ask / tell ----------------------------------------------------------------------------------
    def ask(self) -> Proposal | None:
        for step in range(len(self.instances)):
            inst = self.instances[(self._next + step) % len(self.instances)]
            if not inst.solutions:
                self._new_generation(inst)
            if inst.unassigned:
                self._next = (inst.index + 1) % len(self.instances)
                return self._hand_out(inst)
        return None

    def _new_generation(self, inst: _Instance, replay_injected: int | None = None, replay: bool = False) -> None:
        source = replay_injected if replay else self._best_elsewhere(inst)
        inst.injected = source
        if source is not None:
            inst.received.add(source)
        with _random_state(inst.rng_state) as holder:
            if source is not None:
                inst.es.inject([self._x[source]])
            inst.solutions = [np.asarray(x, float) for x in inst.es.ask()]
        inst.rng_state = holder["state"]
        inst.unassigned = list(range(len(inst.solutions)))

    def _hand_out(self, inst: _Instance) -> Proposal:
        idx = inst.unassigned.pop(0)
        x = inst.solutions[idx]
        values = self.space.from_vector(x)
        attrs = {"cma_instance": inst.index, "cma_generation": inst.generation, "cma_index": idx,
                 "cma_x": [float(v) for v in x], "cma_injected": inst.injected}
        self.study.enqueue_trial(values, user_attrs=attrs, skip_if_exists=False)
        trial = self.study.ask()
        genome = suggest_genome(trial, self.space)
        self._owner[trial.number] = (inst.index, inst.generation, idx)
        self._x[trial.number] = x
        return Proposal(trial, genome, attrs)

    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        owner = self._owner.pop(trial_number, None)
        if owner is None:
            return  # not ours (e.g. a reference evaluation)
        inst = self.instances[owner[0]]
        if owner[1] != inst.generation:
            return  # a straggler from a finished generation (cannot happen in normal runs)
        ok = objectives is not None and bool(np.all(np.isfinite(objectives)))
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
        fitness = [inst.fitness[i] for i in range(len(inst.solutions))]
        with _random_state(inst.rng_state) as holder:
            inst.es.tell(inst.solutions, fitness)
        inst.rng_state = holder["state"]
        inst.generation += 1
        inst.solutions, inst.fitness, inst.unassigned = [], {}, []

    # -- restart ---------------------------------------------------------------------------------------
    def restore(self, trials: Sequence["optuna.trial.FrozenTrial"]) -> None:
        """Replay every instance generation by generation from the stored trials (same asks, same tells).

        `trials` are the valid trials of the study (finished, or running and about to be re-evaluated);
        slots of the current generation that have none are handed out again by `ask`."""
        import optuna

        by_slot: dict[tuple[int, int, int], optuna.trial.FrozenTrial] = {}
        for t in trials:
            if "cma_instance" in t.user_attrs:
                by_slot[(t.user_attrs["cma_instance"], t.user_attrs["cma_generation"], t.user_attrs["cma_index"])] = t
                self._x[t.number] = np.asarray(t.user_attrs["cma_x"], float)  # injections may name any instance's trial
        for inst in self.instances:
            while True:
                slots = [k for k in by_slot if k[0] == inst.index and k[1] == inst.generation]
                if not slots:
                    break
                first = by_slot[min(slots)]
                self._new_generation(inst, first.user_attrs.get("cma_injected"), replay=True)
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
                        result = t.user_attrs.get("result", {})
                        complete = t.state == optuna.trial.TrialState.COMPLETE
                        self.tell(t.number, result.get("maximised") if complete else None, result.get("constraints", ()))
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
