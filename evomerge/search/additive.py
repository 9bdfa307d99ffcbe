"""`optimizer: {name: additive}` — Thompson sampling from an additive Bayesian model of the objectives.

The assumption it exploits: a merge's score is roughly a sum over layer groups of what each group's rule
(its method and that method's parameters) contributes. Both benchmark families have that structure (the
surrogate family by construction: it is an assumption there, not a measurement), and layer-wise merging
plausibly has it to first order. Under it, a genome of G groups is G small problems instead of one problem in
90-170 dimensions, and every evaluation teaches something about every group at once.

The model, per objective (and per constraint), refitted from the study's finished trials before each batch:
    y(x) = sum over groups g of f_g(method_g, parameters of method_g) + noise,
a Gaussian process whose kernel is the sum over groups of
    [same method] * (c + (1 - c) * exp(-|u - u'|^2 / (2 l^2)))         (u: the method's genes in [0, 1])
scaled by 1 / G, on standardised objective values. Genes of the methods a group did not pick do not enter
(they do not change the merge; written at their midpoint, as with `gp`). It is represented by explicit
features (the method's one-hot for `c`, random Fourier features of `u` for the RBF part: Bayesian linear
regression), so that a posterior sample is an explicit additive function. Hyperparameters (l, c, noise; one
set shared by the objectives) are chosen on a small grid by the marginal likelihood.

A candidate: draw one posterior sample of every objective (pathwise conditioning, Wilson et al. 2020), a
random weight vector w on the simplex, and maximise w . f(x) — linear, hence additive: each group's method
and parameters are chosen on their own, over random points and perturbations of the best observed ones.
Each candidate of a batch has its own sample and weights (parallel Thompson sampling, Kandasamy et al. 2018),
so parallel workers get distinct candidates without fantasies; a candidate equal to an existing trial's
merge is redrawn. With probability `greedy` (default 0.75) a candidate maximises the posterior mean instead
of a sample (still under its own random weights, and from its own random pool): pure Thompson sampling
explores too much at 90-170 genes and 40 evaluations (benchmarks/search_efficiency.py, synthetic family,
method_per_layer, 8 groups, 2 seeds: median 54.5 evaluations to the target with 0, 36.5 with 0.5, 34 with
0.75, 42 with 1). Constraints (`constraints.max_drop`) are modelled the same way; their sampled values are
subtracted from the scalarisation with a weight equal to the share of infeasible trials so far (a fixed
Lagrangian relaxation: it keeps the acquisition additive).

State: none beyond the study. Each ask rebuilds the model from the study's finished trials (warm-start and
resumed trials included) and draws from a generator seeded by (seed, trial number), so a resumed run
continues as if it had not stopped. The hyperparameter grid is searched once per `population` finished
trials (in async mode the refits in between keep the last batch's choice). Cost (CPU, 200 trials, 16 groups,
3 objectives): 13 ms per ask from a fitted model, 75 ms for a refit with the grid at 170 genes (once per
batch in synchronous mode), ~35 ms for a refit without it (async mode); 6 / ~15 ms at 51 genes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from evomerge.errors import ExperimentError
from evomerge.search.base import Optimizer, Proposal, suggest_genome

if TYPE_CHECKING:
    import optuna

    from evomerge.search.space import SearchSpace

# n_startup_trials: random draws before the model (fewer when the batch is larger: a batch asked before any
# result is all random draws anyway); features: random Fourier features per (group, method); candidates:
# random points per (group, method) scored for each proposal (plus perturbations of the best observed);
# greedy: the share of proposals from the posterior mean rather than a posterior sample.
SETTINGS = {"n_startup_trials": 8, "features": 32, "candidates": 64, "greedy": 0.75}
LENGTHS = (0.15, 0.3, 0.6)  # length scales of the parameters' RBF part, in [0, 1] units
CONSTANTS = (0.25, 0.5, 0.75)  # share of a group's prior variance explained by its method alone
NOISES = (1e-3, 1e-2, 0.1, 0.3)  # noise variance, in units of the standardised objective's variance
LOCAL_STEP = 0.08  # standard deviation of the perturbations of the best observed parameters, in [0, 1] units
LOCAL_FROM = 5  # perturb the parameters of this many best observed trials (under the sampled scalarisation)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with defaults filled in; unknown or invalid ones are an ExperimentError."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ExperimentError(f"optimizer.settings for 'additive': unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    out = {**SETTINGS, **settings}
    for key in ("n_startup_trials", "features", "candidates"):
        low = 0 if key == "n_startup_trials" else 1
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < low:
            raise ExperimentError(f"optimizer.settings.{key} for 'additive': expected an integer >= {low}, got {out[key]!r}")
    if not isinstance(out["greedy"], (int, float)) or not 0 <= out["greedy"] <= 1:
        raise ExperimentError(f"optimizer.settings.greedy for 'additive': expected a number in [0, 1], got {out['greedy']!r}")
    return out


# -------------------------------------------------------------------------------------------------
# the genome's additive layout
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Per group: its method gene (None with one method) and, per method, that method's genes in order."""

    groups: tuple[str, ...]
    method_gene: tuple[str | None, ...]
    methods: tuple[str, ...]
    genes: tuple[tuple[tuple[str, ...], ...], ...]  # [group][method] -> gene names


def layout(space: "SearchSpace") -> _Layout:
    methods = tuple(space.method_names)
    groups, method_gene, genes = [], [], []
    for group in space.groups:
        groups.append(group.name)
        method_gene.append(f"{group.name}.method" if len(methods) > 1 else None)
        genes.append(tuple(tuple(g.name for g in space.genes if g.group == group.name and g.method == m)
                           for m in methods))
    return _Layout(tuple(groups), tuple(method_gene), methods, tuple(genes))


def encode(space: "SearchSpace", lay: _Layout, values: Mapping[str, Any]) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """(method index per group, [group][method] -> the method's genes in [0, 1] (zeros where not picked))."""
    idx = np.zeros(len(lay.groups), dtype=int)
    units = []
    for gi, name in enumerate(lay.groups):
        if lay.method_gene[gi] is not None:
            idx[gi] = lay.methods.index(values[lay.method_gene[gi]])
        units.append([np.array([space.gene(n).to_unit(values[n]) for n in lay.genes[gi][mi]]) if mi == idx[gi]
                      else np.zeros(len(lay.genes[gi][mi])) for mi in range(len(lay.methods))])
    return idx, units


def merge_key(space: "SearchSpace", values: Mapping[str, Any]) -> tuple:
    """Two genomes with the same key merge identically (each group's method and snapped parameters)."""
    return tuple((m, tuple(sorted((k, repr(v)) for k, v in p.items())))
                 for m, p in (space.group_rule(g, values) for g in space.groups))


# -------------------------------------------------------------------------------------------------
# the model: Bayesian linear regression on additive features
# -------------------------------------------------------------------------------------------------


class _Features:
    """phi(x) with phi(x) . phi(x') = (1/G) sum_g [m_g = m'_g] (c + (1 - c) rff_l(u_g, u'_g)).

    The random frequencies depend only on the seed, so a rebuilt optimizer has the same features."""

    def __init__(self, lay: _Layout, n_features: int, seed: int):
        rng = np.random.default_rng([seed, 7717])
        self.lay = lay
        self.D = n_features
        self.omega = [[rng.standard_normal((n_features, len(g))) for g in groups] for groups in lay.genes]
        self.phase = [[rng.uniform(0, 2 * math.pi, n_features) for _ in groups] for groups in lay.genes]

    def block(self, gi: int, mi: int, U: np.ndarray, length: float) -> np.ndarray:
        """RFF of one group's method parameters: (n, D), or (n, 0) for a method without searched genes."""
        if U.shape[1] == 0:
            return np.zeros((len(U), 0))
        return math.sqrt(2.0 / self.D) * np.cos(U @ self.omega[gi][mi].T / length + self.phase[gi][mi])

    def matrices(self, idx: np.ndarray, units: list, length: float) -> tuple[np.ndarray, np.ndarray]:
        """(constant part, RFF part) of the feature matrix of the rows (idx: (n, G); units[g][m]: (n, d))."""
        G, M = len(self.lay.groups), len(self.lay.methods)
        n = len(idx)
        const = np.zeros((n, G * M))
        blocks = []
        for gi in range(G):
            const[np.arange(n), gi * M + idx[:, gi]] = 1.0
            for mi in range(M):
                rff = self.block(gi, mi, units[gi][mi], length)
                blocks.append(rff * (idx[:, gi] == mi)[:, None])
        rff = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
        return const / math.sqrt(G), rff / math.sqrt(G)


@dataclass
class _Fit:
    length: float
    c: float
    noise: float
    phi: np.ndarray  # (n, F) feature matrix of the trials, hyperparameters applied
    chol: np.ndarray  # Cholesky factor of phi phi^T + noise I
    Z: np.ndarray  # (n, k) standardised outputs
    mean: np.ndarray
    scale: np.ndarray


GRID = tuple((length, c, noise) for length in LENGTHS for c in CONSTANTS for noise in NOISES)


def fit(features: _Features, idx: np.ndarray, units: list, Y: np.ndarray,
        grid: Sequence[tuple[float, float, float]] = GRID) -> _Fit:
    """Hyperparameters (length, c, noise) by marginal likelihood over `grid` (shared by the outputs), then the
    factorisation. A grid of one point: the fit with those hyperparameters."""
    mean = Y.mean(axis=0)
    scale = Y.std(axis=0)
    scale[scale <= 1e-12] = 1.0
    Z = (Y - mean) / scale
    n = len(Z)
    best = None
    for length in dict.fromkeys(g[0] for g in grid):
        const, rff = features.matrices(idx, units, length)
        Kc, Kr = const @ const.T, _rff_gram(rff, idx, features)
        for c in dict.fromkeys(g[1] for g in grid if g[0] == length):
            K = c * Kc + (1 - c) * Kr
            for noise in (g[2] for g in grid if g[0] == length and g[1] == c):
                try:
                    L = np.linalg.cholesky(K + (noise + 1e-9) * np.eye(n))
                except np.linalg.LinAlgError:
                    continue
                A = _solve_lower(L, Z)
                nll = 0.5 * float((A * A).sum()) + Z.shape[1] * float(np.log(np.diag(L)).sum())
                if best is None or nll < best[0]:
                    best = (nll, length, c, noise, L, const, rff)
    _, length, c, noise, L, const, rff = best
    phi = np.concatenate([math.sqrt(c) * const, math.sqrt(1 - c) * rff], axis=1)
    return _Fit(length, c, noise, phi, L, Z, mean, scale)


def _rff_gram(rff: np.ndarray, idx: np.ndarray, features: _Features) -> np.ndarray:
    """rff @ rff.T without the zeros: in one group a row has only its own method's features, so the group's
    method blocks are summed into one (n, D) block S_g and the group contributes (S_g S_g^T) where the two
    rows picked the same method, 0 elsewhere (5x fewer products with five methods)."""
    lay, D = features.lay, features.D
    K = np.zeros((len(rff), len(rff)))
    pos = 0
    for gi in range(len(lay.groups)):
        widths = [D if lay.genes[gi][mi] else 0 for mi in range(len(lay.methods))]
        if not any(widths):
            continue
        S = np.zeros((len(rff), D))
        for w in widths:
            if w:
                S += rff[:, pos:pos + w]
                pos += w
        K += (S @ S.T) * (idx[:, gi][:, None] == idx[:, gi][None, :])
    return K


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(L, B, lower=True)


def posterior_weights(f: _Fit, rng: np.random.Generator, mean_only: bool = False) -> np.ndarray:
    """(F, k) weights of one posterior sample per output (pathwise: prior draw + data correction), or the
    posterior mean's weights."""
    from scipy.linalg import cho_solve

    F, k = f.phi.shape[1], f.Z.shape[1]
    prior = np.zeros((F, k)) if mean_only else rng.standard_normal((F, k))
    eps = np.zeros_like(f.Z) if mean_only else math.sqrt(f.noise) * rng.standard_normal(f.Z.shape)
    v = cho_solve((f.chol, True), f.Z - f.phi @ prior - eps)
    return prior + f.phi.T @ v


# -------------------------------------------------------------------------------------------------
# the optimizer
# -------------------------------------------------------------------------------------------------


class AdditiveOptimizer(Optimizer):
    """Ask/tell over the study; see the module docstring."""

    name = "additive"

    def __init__(self, study: "optuna.Study", space: "SearchSpace", n_objectives: int, population: int, seed: int,
                 settings: Mapping[str, Any] | None = None):
        self.study = study
        self.space = space
        self.n_obj = n_objectives
        self.population = population
        self.seed = seed
        self.settings = check_settings(settings or {})
        self.lay = layout(space)
        self.features = _Features(self.lay, self.settings["features"], seed)
        self._cache: tuple[tuple[int, ...], Any] | None = None  # (finished trial numbers, their model)
        self._keys: dict[int, tuple] = {}  # trial number -> merge_key (a trial's genome never changes)
        self._rows: dict[int, tuple] = {}  # trial number -> encode(...)
        self._hyper: dict[tuple[int, ...], tuple[float, float, float]] = {}  # trial numbers -> (length, c, noise)

    @property
    def batch_size(self) -> int:
        return self.population

    def tell(self, trial_number: int, objectives: Sequence[float] | None, constraints: Sequence[float] = ()) -> None:
        return None  # the runner finishes the trial in the study; the next ask reads it from there

    def ask(self) -> Proposal:
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        number = len(trials)  # the number the new trial gets: the draw depends on it, not on the process's history
        rng = np.random.default_rng([self.seed, number, 1])
        seen = {self._key(t) for t in trials if len(t.params) == len(self.space.genes)}
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs.get("result", {}).get("maximised") is not None
                and len(t.params) == len(self.space.genes)]
        values, how = None, "random"
        if len(done) >= max(self.settings["n_startup_trials"], 2):
            model = self._model(done)
            for attempt in range(4):  # a sample can propose an existing merge; redraw
                values = self._thompson(model, rng, greedy=attempt == 0 and rng.random() < self.settings["greedy"])
                if merge_key(self.space, values) not in seen:
                    how = "thompson"
                    break
                values = None
        for _ in range(100):
            if values is not None:
                break
            draw = self._canonical(self.space.sample(rng))
            if merge_key(self.space, draw) not in seen:
                values = draw
        if values is None:  # a space too small to hold a new merge: repeat one (its cached score answers it)
            values = self._canonical(self.space.sample(rng))
        attrs = {"additive": how}
        self.study.enqueue_trial(values, user_attrs=attrs, skip_if_exists=False)
        trial = self.study.ask()
        return Proposal(trial, suggest_genome(trial, self.space), attrs)

    def _key(self, trial: "optuna.trial.FrozenTrial") -> tuple:
        if trial.number not in self._keys:
            self._keys[trial.number] = merge_key(self.space, trial.params)
        return self._keys[trial.number]

    def _encoded(self, trial: "optuna.trial.FrozenTrial") -> tuple:
        if trial.number not in self._rows:
            self._rows[trial.number] = encode(self.space, self.lay, trial.params)
        return self._rows[trial.number]

    # -- model -------------------------------------------------------------------------------------
    def _model(self, done: list) -> dict:
        key = tuple(t.number for t in done)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        rows = [self._encoded(t) for t in done]
        idx = np.stack([r[0] for r in rows])
        G, M = len(self.lay.groups), len(self.lay.methods)
        units = [[np.stack([r[1][gi][mi] for r in rows]) for mi in range(M)] for gi in range(G)]
        results = [t.user_attrs["result"] for t in done]
        Y = np.array([r["maximised"] for r in results], dtype=float)
        C = np.array([list(r.get("constraints", ())) for r in results], dtype=float).reshape(len(done), -1)
        infeasible = float(np.mean((C > 0).any(axis=1))) if C.shape[1] else 0.0
        out = np.concatenate([Y, C], axis=1)
        # The hyperparameter grid is searched on whole batches only: on the first k * population finished
        # trials (by trial number). In synchronous mode that is every finished trial; in async mode, where the
        # model is refitted after each finished trial, the grid runs once per `population` trials and the
        # refits in between only factorise (a fixed prefix, so a resumed run chooses the same values).
        n = len(done)
        prefix = (n // self.population) * self.population
        if prefix < 2 or prefix == n:
            f = fit(self.features, idx, units, out)
            self._hyper[key] = (f.length, f.c, f.noise)
        else:
            pkey = key[:prefix]
            if pkey not in self._hyper:
                part = fit(self.features, idx[:prefix], [[u[:prefix] for u in g] for g in units], out[:prefix])
                self._hyper[pkey] = (part.length, part.c, part.noise)
            f = fit(self.features, idx, units, out, grid=[self._hyper[pkey]])
        model = {"fit": f, "idx": idx, "units": units, "infeasible": infeasible}
        self._cache = (key, model)
        return model

    def _thompson(self, model: dict, rng: np.random.Generator, greedy: bool = False) -> dict[str, Any]:
        """The maximiser, group by group, of a random scalarisation of one posterior sample."""
        f: _Fit = model["fit"]
        W = posterior_weights(f, rng, mean_only=greedy)  # (F, objectives + constraints)
        w = rng.dirichlet(np.ones(self.n_obj))
        n_con = W.shape[1] - self.n_obj
        direction = np.concatenate([w, -model["infeasible"] * np.ones(n_con) / max(n_con, 1)])
        beta = W @ direction  # one weight vector of the scalarised sample
        G, M = len(self.lay.groups), len(self.lay.methods)
        D = self.features.D
        c_w = math.sqrt(f.c) / math.sqrt(G)
        r_w = math.sqrt(1 - f.c) / math.sqrt(G)
        n_const = G * M
        # where each (group, method)'s RFF block sits in the feature vector
        offsets, pos = {}, n_const
        for gi in range(G):
            for mi in range(M):
                width = D if len(self.lay.genes[gi][mi]) else 0
                offsets[gi, mi] = (pos, width)
                pos += width
        # the best observed trials under this scalarisation seed the local perturbations
        scores = f.phi @ beta
        top = np.argsort(-scores)[:LOCAL_FROM]
        values: dict[str, Any] = {}
        P = self.settings["candidates"]
        for gi in range(G):
            best = (-np.inf, 0, np.zeros(0))
            for mi in range(M):
                genes = self.lay.genes[gi][mi]
                const_value = c_w * beta[gi * M + mi]
                if not genes:
                    cand_value, u = const_value, np.zeros(0)
                else:
                    d = len(genes)
                    local = [model["units"][gi][mi][t] for t in top if model["idx"][t, gi] == mi]
                    pool = [rng.random((P, d))]
                    for u0 in local:
                        pool.append(np.clip(u0 + LOCAL_STEP * rng.standard_normal((max(P // LOCAL_FROM, 4), d)), 0, 1))
                        pool.append(u0[None, :])
                    pool = np.concatenate(pool)
                    start, width = offsets[gi, mi]
                    vals = const_value + r_w * self.features.block(gi, mi, pool, f.length) @ beta[start:start + width]
                    j = int(np.argmax(vals))
                    cand_value, u = float(vals[j]), pool[j]
                if cand_value > best[0]:
                    best = (cand_value, mi, u)
            _, mi, u = best
            if self.lay.method_gene[gi] is not None:
                values[self.lay.method_gene[gi]] = self.lay.methods[mi]
            for m2, genes in enumerate(self.lay.genes[gi]):
                for k, name in enumerate(genes):
                    gene = self.space.gene(name)
                    values[name] = _from_unit(gene, u[k]) if m2 == mi else gene.midpoint()
        return values

    def _canonical(self, values: dict[str, Any]) -> dict[str, Any]:
        from evomerge.search.gp import canonical_genome

        return canonical_genome(self.space, values)


def _from_unit(gene, u: float) -> Any:
    if gene.categorical:  # a categorical parameter gene: its choices in order, [0, 1] split evenly
        k = len(gene.choices)
        return gene.choices[min(int(round(float(u) * (k - 1))), k - 1)]
    return gene.from_unit(u)
