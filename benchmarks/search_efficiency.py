"""Search efficiency: how many evaluations each optimizer needs, on two families of problems over the real search
spaces, and the per-candidate overhead of the worker (merge + weight swap) as a share of evaluation time.

Part 1 (optimizers). Every optimizer (NSGA-II, CMA-ES, TPE, random search, the Gaussian-process optimiser,
the additive-model optimiser) runs through the same classes and protocol as `evomerge search` (synchronous
generations, Optuna in-memory storage) over a real space (the genes of `method_per_layer` or `ram_per_layer`
bound to a 28-layer model, at 4, 8 or 16 layer groups), on three objectives from one of three families:

- `synthetic`: a cheap objective with a known optimum. Each of three objectives prefers, per layer group,
  one method and one point of that method's parameters (seeded). A group scores 1 - 4 * mean squared
  distance of its genes (scaled to [0, 1]) to the preferred point, 0.25 when the group uses another method;
  an objective is the mean over groups. The objectives conflict, so there is a real front.
- `surrogate`: built from real evaluations. `benchmarks/real_scores/uniform_zoo.csv` holds uniform merges of
  the committed zoo (one method and parameter point for every tensor, drawn at random) scored on the demo's
  three suites (64 items each); a Gaussian-process regression per objective (`ScoreSurrogate`: one-hot
  method + parameters, fitted by marginal likelihood) predicts a uniform merge's score, and a per-layer
  genome scores the mean over its groups of the prediction for that group's method and parameters. The
  additivity over layer groups is this family's assumption (the zoo has 3 decoder layers, so real scores of
  8- or 16-group genomes cannot exist); the response to each method and parameter is measured.
- `pairwise`: the synthetic family with half of each objective replaced by a reward for neighbouring layer
  groups that use the same method with similar parameters (`PairwiseProblem`). Not additive over groups: the
  check that an optimizer assuming additivity (`additive`) does not win only because both other families
  are additive.

Printed per (family, space, groups): each optimizer's mean hypervolume (reference point 0; the base's scores
for `surrogate`) after 30/60/100/200 evaluations, the evaluations it needs to reach the target (random
search's 200-evaluation hypervolume, median over seeds), median over seeds (and per seed; '>N' when it never
does within its N evaluations), and its own CPU time per candidate (ask + tell, median over candidates and
seeds). `--markdown FILE` writes the same table (with the command) for the docs.

Part 2 (overhead). A worker on the tiny generated family (hidden 64, 2 layers) with the HF backend
and a real generation-based suite (`coding` on its toy data): for candidates drawn from a search
space it merges in memory, swaps the weights in and generates; the share is
(merge + swap) / (merge + swap + evaluation), per candidate.

    python benchmarks/search_efficiency.py                          # both parts, 5 seeds
    python benchmarks/search_efficiency.py --seeds 3 --skip-overhead --family synthetic,surrogate,pairwise \\
        --space method_per_layer,ram_per_layer --groups 4,8,16 --optimizers nsga2,cmaes,tpe,random,additive \\
        --markdown search_efficiency.md
    python benchmarks/search_efficiency.py --skip-optimizers --overhead-space ram_per_layer
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evomerge.search.space import SearchSpace
from evomerge.search.space_spec import load_space_spec  # noqa: E402
from evomerge.search.pareto import hypervolume, pareto_front  # noqa: E402

CHECKPOINTS = (30, 60, 100, 200)


class KnownOptimumProblem:
    """Conflicting objectives over a search space's genes, each with a known optimum.

    Per layer group, each objective prefers one method and one point of its parameters (seeded). A
    group's score is 1 - 4 * mean squared distance of its genes (scaled to [0, 1]) to the preferred
    point with the preferred method, 0.25 with another method; an objective is the mean over groups.
    `shared` in [0, 1] mixes in a preference common to all objectives (real merges are good or bad on
    every benchmark at once more often than not): objective k = (1 - shared) * own_k + shared * common.
    Each objective's optimum is reached by `optimum_genome(k)` (value 1 when shared = 0)."""

    def __init__(self, space: SearchSpace, n_objectives: int = 3, shared: float = 0.0, seed: int = 1234):
        rng = np.random.default_rng(seed)
        self.space = space
        self.n = n_objectives
        self.shared = shared
        self.prefs = [self._preference(rng) for _ in range(n_objectives)]
        self.common = self._preference(rng)

    def _preference(self, rng) -> dict:
        pref = {}
        for group in self.space.groups:
            method = self.space.method_names[int(rng.integers(len(self.space.method_names)))]
            genes = [g for g in self.space.genes if g.group == group.name and g.method == method]
            pref[group.name] = (method, {g.name: float(rng.random()) for g in genes})
        return pref

    def _score(self, pref: dict, values: dict) -> float:
        total = 0.0
        for group in self.space.groups:
            method, target = pref[group.name]
            if self.space.method_of(group, values) == method:
                d = np.mean([(self.space.gene(g).to_unit(values[g]) - t) ** 2 for g, t in target.items()]) if target else 0.0
                total += max(1.0 - 4.0 * d, 0.0)
            else:
                total += 0.25  # another method: some credit, never as good as the preferred one done well
        return total / len(self.space.groups)

    def __call__(self, values: dict) -> list[float]:
        common = self._score(self.common, values) if self.shared else 0.0
        return [(1 - self.shared) * self._score(p, values) + self.shared * common for p in self.prefs]

    def optimum_genome(self, k: int) -> dict:
        """The genome maximising objective k: per group, the better of its own and the common preference
        (when both name the same method, the weighted mean of their targets, the quadratic's maximum)."""
        values = {g.name: g.midpoint() for g in self.space.genes}
        w = self.shared
        for group in self.space.groups:
            own_m, own_t = self.prefs[k][group.name]
            com_m, com_t = self.common[group.name]
            if w and own_m == com_m:
                method, target = own_m, {g: (1 - w) * own_t[g] + w * com_t[g] for g in own_t}
            elif w > 0.5:
                method, target = com_m, com_t
            else:
                method, target = own_m, own_t
            if len(self.space.method_names) > 1:
                values[f"{group.name}.method"] = method
            for g, u in target.items():
                values[g] = self.space.gene(g).from_unit(u)
        return values


class PairwiseProblem(KnownOptimumProblem):
    """The synthetic family plus a pairwise interaction between neighbouring layer groups: not additive over
    groups, so a model that assumes additivity (`additive`) is checked on a problem it does not match.

    objective k = (1 - interaction) * (the synthetic family's objective k) + interaction * smoothness, where
    smoothness is the mean over neighbouring layer groups (g_i, g_i+1) of [same method] * (1 - mean absolute
    difference of that method's genes in [0, 1]): depth-wise consistency, which no group scores alone."""

    def __init__(self, space: SearchSpace, interaction: float = 0.5, **kwargs):
        super().__init__(space, **kwargs)
        self.interaction = interaction
        self.pairs = list(zip(space.layer_groups, space.layer_groups[1:]))

    def _smoothness(self, values: dict) -> float:
        if not self.pairs:
            return 0.0
        total = 0.0
        for a, b in self.pairs:
            method = self.space.method_of(a, values)
            if method != self.space.method_of(b, values):
                continue
            genes = [g for g in self.space.genes if g.group == a.name and g.method == method]
            if not genes:
                total += 1.0
                continue
            diffs = [abs(g.to_unit(values[g.name]) - g.to_unit(values[g.name.replace(a.name, b.name, 1)]))
                     for g in genes]
            total += 1.0 - float(np.mean(diffs))
        return total / len(self.pairs)

    def __call__(self, values: dict) -> list[float]:
        smooth = self._smoothness(values)
        return [(1 - self.interaction) * v + self.interaction * smooth for v in super().__call__(values)]


REAL_SCORES = ROOT / "benchmarks" / "real_scores" / "uniform_zoo.csv"
OBJECTIVES = ("coding", "tool_use", "memory")


def _rbf_gp_fit(X: np.ndarray, y: np.ndarray, blocks: list[np.ndarray]) -> dict:
    """GP regression with a squared-exponential kernel, one length scale per block of columns; length scales,
    signal and noise variances chosen by maximising the log marginal likelihood (L-BFGS from a few starts).

    The noise is fitted, not set to the scores' standard errors: what a search maximises is the score on a
    fixed item set, a deterministic function of the recipe (its sampling error is the same for every
    optimizer), so the surrogate should reproduce the measured scores, not smooth them to their mean. (With
    the measured standard errors as noise, the marginal likelihood finds no signal in these scores: on the
    toy zoo, uniform merges differ by about one standard error.)"""
    from scipy.optimize import minimize

    mu, sd = float(y.mean()), float(y.std()) or 1.0
    z = (y - mu) / sd

    def kernel(A, B, log_ls):
        return sum(((A[:, None, b] - B[None, :, b]) ** 2).sum(-1) * np.exp(-2 * ls) for b, ls in zip(blocks, log_ls))

    def gram(theta):
        log_ls, log_sf, log_sn = theta[:-2], theta[-2], theta[-1]
        return np.exp(2 * log_sf) * np.exp(-0.5 * kernel(X, X, log_ls)) + (np.exp(2 * log_sn) + 1e-8) * np.eye(len(X))

    def nll(theta):
        try:
            L = np.linalg.cholesky(gram(theta))
        except np.linalg.LinAlgError:
            return 1e10
        alpha = np.linalg.solve(L.T, np.linalg.solve(L, z))
        return float(0.5 * z @ alpha + np.log(np.diag(L)).sum())

    best = None
    for start in ([0.0] * len(blocks) + [0.0, -1.0], [1.0] * len(blocks) + [-0.5, -0.5], [-1.0] * len(blocks) + [0.0, -2.0]):
        res = minimize(nll, np.asarray(start, float), method="L-BFGS-B",
                       bounds=[(-3, 3)] * len(blocks) + [(-3, 2), (-4, 1)])
        if best is None or res.fun < best.fun:
            best = res
    theta = best.x
    alpha = np.linalg.solve(gram(theta), z)
    return {"X": X, "alpha": alpha, "log_ls": theta[:-2], "log_sf": theta[-2], "log_sn": theta[-1], "mu": mu,
            "sd": sd, "kernel": kernel}


class ScoreSurrogate:
    """Predicted real scores of uniform merges of the zoo (one rule for every tensor), from real measurements.

    Input: a method and its parameters (as `method_per_layer` names them). Encoding: the method one-hot, then
    every parameter of every method scaled to [0, 1] (log parameters in log space), those of other methods at
    0.5 (they do not change the merge). One GP per objective (`_rbf_gp_fit`: one length scale for the method
    block, one for the parameters)."""

    def __init__(self, path: Path = REAL_SCORES):
        import csv

        spec = load_space_spec("method_per_layer", {"layer_groups": {"count": 1, "non_layer": "first"}})
        self.uniform = SearchSpace(spec, base="/base", models=["/a", "/b", "/c"], model_names=list(OBJECTIVES),
                                   num_layers=1)
        self.methods = self.uniform.method_names
        self.params = [g for g in self.uniform.genes if not g.categorical]
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise SystemExit(f"{path}: no rows")
        X = np.array([self._encode(r["g0.method"], {g.name.split(".", 1)[1]: float(r[g.name]) for g in self.params})
                      for r in rows])
        blocks = [np.arange(len(self.methods)), np.arange(len(self.methods), X.shape[1])]
        self.models = [_rbf_gp_fit(X, np.array([float(r[o]) for r in rows]), blocks) for o in OBJECTIVES]
        self.rows = len(rows)
        refs = json.loads(path.with_name(path.stem + "_references.json").read_text())
        # the hypervolume's reference point, as `evomerge search` takes it: the base model's search-split scores
        self.reference = [float(v) for v in refs["base"]["search_values"]]

    def _encode(self, method: str, params: dict[str, float]) -> np.ndarray:
        """params: '<method>.<param>' -> value, for the chosen method (others may be absent)."""
        x = np.zeros(len(self.methods) + len(self.params))
        x[self.methods.index(method)] = 1.0
        for i, g in enumerate(self.params):
            key = g.name.split(".", 1)[1]
            x[len(self.methods) + i] = g.to_unit(params[key]) if g.method == method and key in params else 0.5
        return x

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) predicted objective scores (posterior means) for encoded rows X."""
        out = []
        for m in self.models:
            K = np.exp(2 * m["log_sf"]) * np.exp(-0.5 * m["kernel"](X, m["X"], m["log_ls"]))
            out.append(m["mu"] + m["sd"] * (K @ m["alpha"]))
        return np.stack(out, axis=1)


class SurrogateProblem:
    """Three objectives over a per-layer space from real scores: the mean over layer groups of the surrogate's
    prediction for each group's method and parameters."""

    def __init__(self, space: SearchSpace, surrogate: ScoreSurrogate):
        self.space = space
        self.surrogate = surrogate
        self.n = len(OBJECTIVES)
        self.reference = surrogate.reference
        unknown = set(space.method_names) - set(surrogate.methods)
        if unknown:
            raise SystemExit(f"the surrogate has no scores for method(s) {sorted(unknown)}")

    def __call__(self, values: dict) -> list[float]:
        rows = []
        for group in self.space.groups:
            method, _ = self.space.group_rule(group, values)
            params = {f"{method}.{g.param}": float(values[g.name]) for g in self.space.genes
                      if g.group == group.name and g.method == method}
            rows.append(self.surrogate._encode(method, params))
        return [float(v) for v in self.surrogate.predict(np.asarray(rows)).mean(axis=0)]


def run_optimizer(name: str, space: SearchSpace, problem, seed: int, evals: int,
                  population: int, settings: dict) -> tuple[list[float], list[float]]:
    """Hypervolume after each evaluation, and the optimizer's own seconds per candidate (ask + tell, CPU time of
    this process: on a shared machine wall time measures the other processes too)."""
    import optuna

    from evomerge.search.cma import CMAESOptimizer
    from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    directions = ["maximize"] * problem.n
    if name == "cmaes":
        study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=seed))
        opt = CMAESOptimizer(study, space, problem.n, population, seed, [1.0] * problem.n, None, settings)
    elif name == "additive":
        from evomerge.search.additive import AdditiveOptimizer

        study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=seed))
        opt = AdditiveOptimizer(study, space, problem.n, population, seed, settings)
    else:
        sampler = build_sampler(name, population, seed, settings, False, space=space)
        study = optuna.create_study(directions=directions, sampler=sampler)
        opt = OptunaOptimizer(name, study, space, population)
    points, curve, own = [], [], []
    while len(points) < evals:
        batch = []
        while len(batch) < min(opt.batch_size, evals - len(points)):
            t0 = time.process_time()
            p = opt.ask()
            own.append(time.process_time() - t0)
            if p is None:
                break
            batch.append(p)
        for i, p in enumerate(batch):
            y = problem(p.values)
            t0 = time.process_time()
            p.trial.set_user_attr("result", {"maximised": y, "constraints": []})
            study.tell(p.number, y)
            opt.tell(p.number, y, [])
            own[len(own) - len(batch) + i] += time.process_time() - t0
            points.append(y)
            front = [points[i] for i in pareto_front(points)]
            curve.append(hypervolume(front, getattr(problem, "reference", [0.0] * problem.n)))
    return curve, own


def evals_to_reach(curve: list[float], target: float) -> int | None:
    for i, hv in enumerate(curve, 1):
        if hv >= target:
            return i
    return None


def make_problem(family: str, space: SearchSpace, shared: float, surrogate: "ScoreSurrogate | None"):
    if family == "synthetic":
        return KnownOptimumProblem(space, shared=shared)
    if family == "surrogate":
        return SurrogateProblem(space, surrogate)
    if family == "pairwise":
        return PairwiseProblem(space, shared=shared)
    raise SystemExit(f"--family: unknown family {family!r} (synthetic, surrogate, pairwise)")


def optimizers_part(args) -> None:
    surrogate = ScoreSurrogate() if "surrogate" in args.family else None
    if surrogate is not None:
        print(f"surrogate: {surrogate.rows} real uniform merges of the zoo ({REAL_SCORES.relative_to(ROOT)})")
    print(f"{args.seeds} seeds; populations: {args.population} (NSGA / TPE / random / GP / additive batch), CMA-ES "
          f"{args.cma_population} per scalarisation; settings {args.settings or 'the defaults'}; at most {args.gp_evals} "
          f"evaluations and {min(args.seeds, args.gp_seeds)} seeds per GP run\n")
    header = ["| family | space | groups | genes | optimizer | " + " | ".join(f"HV@{c}" for c in CHECKPOINTS) +
              " | evals to target (median) | per seed | own ms / candidate |",
              "|---|---|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|---|"]
    args.rows = []
    for line in header:
        print(line)
    for family in args.family:
        for space_name in args.space:
            for groups in args.groups:
                spec = load_space_spec(space_name, {"layer_groups": {"count": groups}})
                space = SearchSpace(spec, base="/base", models=["/a", "/b", "/c"], model_names=list(OBJECTIVES),
                                    num_layers=28)
                problem = make_problem(family, space, args.shared, surrogate)
                _table(args, family, space_name, groups, space, problem)
    if args.markdown:
        command = "python benchmarks/search_efficiency.py " + " ".join(sys.argv[1:])
        Path(args.markdown).write_text(
            f"<!-- {command} -->\n{args.seeds} seeds; populations: {args.population} (NSGA / TPE / random / GP / "
            f"additive batch), CMA-ES {args.cma_population} per scalarisation; "
            + (f"the GP: at most {args.gp_evals} evaluations, {min(args.seeds, args.gp_seeds)} seed(s); "
               if "gp" in args.optimizers else "")
            + f"settings {args.settings or 'the defaults'}; own ms = optimizer CPU milliseconds per candidate "
            f"(ask + tell, median)\n\n"
            + "\n".join(header + args.rows) + "\n")


def _table(args, family, space_name, groups, space, problem) -> None:
    """Random search first (it sets the target), then one row per optimizer as soon as its seeds are done."""
    target = None
    for name in ["random"] + [o for o in args.optimizers if o != "random"]:
        settings = dict(args.settings.get(name, {}))  # by default those `evomerge search` uses
        population = args.cma_population if name == "cmaes" else args.population
        n = min(args.evals, args.gp_evals) if name == "gp" else args.evals
        seeds = min(args.seeds, args.gp_seeds) if name == "gp" else args.seeds  # random's seeds set the target
        runs, own = [], []
        for seed in range(seeds):
            curve, secs = run_optimizer(name, space, problem, seed, n, population, settings)
            runs.append(curve)
            own += secs
        if target is None:
            target = statistics.median(c[args.evals - 1] for c in runs)
        if name not in args.optimizers:
            continue
        hv = [f"{statistics.mean(r[c - 1] for r in runs):.4f}" if c <= n else "-" for c in CHECKPOINTS]
        reach = [evals_to_reach(r, target) for r in runs]
        med = statistics.median(x if x is not None else n + 1 for x in reach)
        med_s = f">{n}" if med > n else f"{med:g}"
        per_seed = ", ".join(str(x) if x is not None else f">{n}" for x in reach)
        row = (f"| {family} | {space_name} | {groups} | {len(space.genes)} | {name} | " + " | ".join(hv) +
               f" | {med_s} | {per_seed} | {statistics.median(own) * 1e3:.1f} |")
        args.rows.append(row)
        print(row, flush=True)


def overhead_part(args) -> None:
    import torch

    from evomerge.tiny_checkpoints import build_tiny_family
    from evomerge.scoring.outcomes import EvalJob, JobKey
    from evomerge.scoring.workers import Worker, WorkerSetup

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        family = build_tiny_family(Path(tmp) / "family", seed=0)
        models = {a: str(family[a]) for a in ("coding", "tool_use", "memory")}
        suite = {"kind": "coding", "data": "toy", "limit": args.items,
                 "generation": {"max_new_tokens": args.max_new_tokens}}
        setup = WorkerSetup(base=str(family["base"]), models=list(models.values()), suites={"coding": suite},
                            threads=args.threads)
        worker = Worker(setup, "cpu")
        worker.start()
        spec = load_space_spec(args.overhead_space, {"layer_groups": {"count": 2}})
        space = SearchSpace.for_checkpoints(spec, str(family["base"]), models)
        rng = np.random.default_rng(0)
        shares, merges, evals = [], [], []
        worker.run(EvalJob(JobKey.trial(-1, 0), ("coding",), None, None, 0, space.decode(space.sample(rng)).to_dict()))
        for i in range(args.candidates):
            job = EvalJob(JobKey.trial(i, 0), ("coding",), None, None, 0, space.decode(space.sample(rng)).to_dict())
            out = worker.run(job)
            if not out.ok:
                print(f"candidate {i} failed: {out.reason}")
                continue
            overhead = out.merge_seconds + out.swap_seconds  # the per-candidate overhead: merge and swap
            merges.append(overhead)
            evals.append(out.eval_seconds)
            shares.append(overhead / (overhead + out.eval_seconds))
        n_params = sum(t.numel() for t in worker.generator.model.parameters())
    print()
    print(f"## Per-candidate overhead: tiny family ({n_params / 1e3:.0f}k parameters, 2 layers), HF backend, "
          f"space '{args.overhead_space}', suite coding/toy: {args.items} items x {args.max_new_tokens} new tokens, "
          f"{len(shares)} candidates, {args.threads} thread(s)")
    print(f"merge + swap: median {statistics.median(merges) * 1e3:.1f} ms; evaluation: median {statistics.median(evals) * 1e3:.0f} ms; "
          f"overhead share: median {statistics.median(shares) * 100:.2f}%, mean {statistics.mean(shares) * 100:.2f}%, "
          f"max {max(shares) * 100:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="synthetic,surrogate,pairwise",
                        help="comma-separated: synthetic, surrogate, pairwise (synthetic + neighbouring-group interactions)")
    parser.add_argument("--space", default="method_per_layer", help="comma-separated bundled spaces")
    parser.add_argument("--groups", default="4", help="comma-separated layer-group counts")
    parser.add_argument("--shared", type=float, default=0.0,
                        help="synthetic family: weight of a preference shared by all objectives (0: fully conflicting)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--optimizers", default="nsga2,cmaes,tpe,random,gp,additive")
    parser.add_argument("--markdown", help="also write the optimizers' table to this markdown file")
    parser.add_argument("--population", type=int, default=8, help="NSGA population / TPE, random and GP batch")
    parser.add_argument("--cma-population", type=int, default=6, help="CMA-ES popsize (per scalarisation)")
    parser.add_argument("--gp-evals", type=int, default=60,
                        help="evaluations per GP run (its ask costs seconds; the goal is judged at 40)")
    parser.add_argument("--gp-seeds", type=int, default=5, help="seeds of the GP runs (at most --seeds)")
    parser.add_argument("--settings", default="{}",
                        help='optimizer.settings per optimizer, as JSON: {"gp": {"local_searches": 3}, "tpe": {...}}')
    parser.add_argument("--skip-optimizers", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--overhead-space", default="method_per_layer")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.optimizers = args.optimizers.split(",")
    args.family = args.family.split(",")
    args.space = args.space.split(",")
    args.groups = [int(g) for g in args.groups.split(",")]
    args.settings = json.loads(args.settings)
    warnings.filterwarnings("ignore")
    if not args.skip_optimizers:
        optimizers_part(args)
    if not args.skip_overhead:
        overhead_part(args)


if __name__ == "__main__":
    main()
