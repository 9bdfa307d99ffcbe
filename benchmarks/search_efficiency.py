"""Search efficiency: hypervolume reached per evaluation by NSGA-II, CMA-ES and TPE against random search,
and the per-candidate overhead of the worker (merge + weight swap) as a share of evaluation time.

Part 1 (optimizers). A cheap objective with a known optimum over a real search space (the genes of
`method_per_layer` or `ram_per_layer` bound to a 28-layer model): each of three objectives prefers,
per layer group, one method and one point of that method's parameters (seeded). A group scores
1 - 4 * mean squared distance of its genes (scaled to [0, 1]) to the preferred point, halved when the
group uses another method; an objective is the mean over groups. Each objective's optimum is 1 (its
own preferred genome); the objectives conflict, so there is a real front. The optimizers run through
the same classes and protocol as `evomerge search` (synchronous generations, Optuna in-memory
storage). Printed: mean hypervolume (reference point 0) after 30/60/100/200 evaluations, its ratio to
random search's, and how many evaluations each optimizer needs to reach random search's 200-evaluation
hypervolume (median over seeds; '>N' when it never does).

Part 2 (overhead). A worker on the tiny generated family (hidden 64, 2 layers) with the HF backend
and a real generation-based suite (`coding` on its toy data): for candidates drawn from a search
space it merges in memory, swaps the weights in and generates; the share is
(merge + swap) / (merge + swap + evaluation), per candidate.

    python benchmarks/search_efficiency.py                          # both parts, 5 seeds
    python benchmarks/search_efficiency.py --seeds 3 --skip-overhead
    python benchmarks/search_efficiency.py --skip-optimizers --overhead-space ram_per_layer
"""

from __future__ import annotations

import argparse
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


def run_optimizer(name: str, space: SearchSpace, problem: KnownOptimumProblem, seed: int, evals: int,
                  population: int, settings: dict) -> list[float]:
    """Hypervolume after each evaluation."""
    import optuna

    from evomerge.search.cma import CMAESOptimizer
    from evomerge.search.optuna_samplers import OptunaOptimizer, build_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    directions = ["maximize"] * problem.n
    if name == "cmaes":
        study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=seed))
        opt = CMAESOptimizer(study, space, problem.n, population, seed, [1.0] * problem.n, None, settings)
    else:
        study = optuna.create_study(directions=directions, sampler=build_sampler(name, population, seed, settings, False))
        opt = OptunaOptimizer(name, study, space, population)
    points, curve = [], []
    while len(points) < evals:
        batch = []
        while len(batch) < min(opt.batch_size, evals - len(points)):
            p = opt.ask()
            if p is None:
                break
            batch.append(p)
        for p in batch:
            y = problem(p.values)
            p.trial.set_user_attr("result", {"maximised": y, "constraints": []})
            study.tell(p.number, y)
            opt.tell(p.number, y, [])
            points.append(y)
            front = [points[i] for i in pareto_front(points)]
            curve.append(hypervolume(front, [0.0] * problem.n))
    return curve


def evals_to_reach(curve: list[float], target: float) -> int | None:
    for i, hv in enumerate(curve, 1):
        if hv >= target:
            return i
    return None


def optimizers_part(args) -> None:
    spec = load_space_spec(args.space, {"layer_groups": {"count": args.groups}})
    space = SearchSpace(spec, base="/base", models=["/a", "/b", "/c"], model_names=["coding", "tool_use", "memory"],
                        num_layers=28)
    problem = KnownOptimumProblem(space, shared=args.shared)
    optima = [problem(problem.optimum_genome(k))[k] for k in range(problem.n)]
    print(f"## Optimizers: space '{args.space}' ({len(space.genes)} genes, {space.dimension} CMA-ES coordinates), "
          f"3 objectives (shared component {args.shared}), {args.seeds} seeds, {args.evals} evaluations")
    print(f"known optimum of each objective: {[round(float(o), 3) for o in optima]}; hypervolume of the 3 optima "
          f"alone: {hypervolume([problem(problem.optimum_genome(k)) for k in range(problem.n)], [0.0] * problem.n):.4f}")
    curves: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for name in args.optimizers:
        settings = {}  # the defaults `evomerge search` uses
        population = args.cma_population if name == "cmaes" else args.population
        t0 = time.perf_counter()
        curves[name] = [run_optimizer(name, space, problem, seed, args.evals, population, settings)
                        for seed in range(args.seeds)]
        seconds[name] = (time.perf_counter() - t0) / args.seeds
    random_final = statistics.mean(c[-1] for c in curves["random"]) if "random" in curves else None
    cols = [c for c in CHECKPOINTS if c <= args.evals]
    print()
    print("| optimizer | " + " | ".join(f"HV@{c}" for c in cols) + " | " +
          " | ".join(f"ratio@{c}" for c in cols) + f" | evals to random's HV@{args.evals} (median) | s/run |")
    print("|---|" + "---|" * (2 * len(cols) + 2))
    for name, runs in curves.items():
        means = [statistics.mean(r[c - 1] for r in runs) for c in cols]
        rnd = [statistics.mean(r[c - 1] for r in curves["random"]) for c in cols] if "random" in curves else None
        ratios = [f"{m / r:.2f}" if rnd and r > 0 else "-" for m, r in zip(means, rnd or [0] * len(cols))]
        reach = [evals_to_reach(r, random_final) for r in runs] if random_final else []
        reached = sorted(x if x is not None else args.evals + 1 for x in reach)
        med = statistics.median(reached) if reached else None
        med_s = "-" if med is None else (f">{args.evals}" if med > args.evals else f"{med:.0f}")
        print(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) + " | " + " | ".join(ratios) +
              f" | {med_s} (per seed: {[x if x is not None else f'>{args.evals}' for x in reach]}) | {seconds[name]:.1f} |")


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
            merges.append(out.merge_seconds)
            evals.append(out.eval_seconds)
            shares.append(out.merge_seconds / (out.merge_seconds + out.eval_seconds))
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
    parser.add_argument("--space", default="method_per_layer")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--shared", type=float, default=0.0,
                        help="weight of a preference shared by all objectives (0: fully conflicting objectives)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--optimizers", default="nsga2,cmaes,tpe,random")
    parser.add_argument("--population", type=int, default=8, help="NSGA population / TPE and random batch")
    parser.add_argument("--cma-population", type=int, default=6, help="CMA-ES popsize (per scalarisation)")
    parser.add_argument("--skip-optimizers", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--overhead-space", default="method_per_layer")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.optimizers = args.optimizers.split(",")
    warnings.filterwarnings("ignore")
    if not args.skip_optimizers:
        optimizers_part(args)
    if not args.skip_overhead:
        overhead_part(args)


if __name__ == "__main__":
    main()
