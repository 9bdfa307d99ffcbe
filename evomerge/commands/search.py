"""Search for the best merges: an evolutionary / Bayesian multi-objective search over merge recipes.

Runs the experiment YAML (base, models, search space, objectives, optimizer, budget, fidelity
ladder, workers, seed; see evomerge/experiment.py) and writes RUN_DIR: the Optuna storage with every
trial, trials.csv (appended live), hypervolume.csv, front.json, PNG plots and report.html.
A progress bar shows candidates done, failures, the front size and the hypervolume.

examples:
  evomerge search experiments/demo.yaml --out runs/demo
  evomerge search exp.yaml --out runs/x --budget 300 --workers 4          # 4 local worker processes
  evomerge search exp.yaml --out runs/x --ray-address auto                # workers on a Ray cluster
  evomerge search exp.yaml --out runs/x --resume                          # continue after a crash or kill -9
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML")
    parser.add_argument("--out", required=True, help="run directory (created; must be new unless --resume)")
    parser.add_argument("--budget", type=int, default=None, help="number of candidates (overrides the YAML)")
    parser.add_argument("--workers", type=int, default=None, help="number of workers (overrides the YAML)")
    parser.add_argument("--ray-address", default=None,
                        help="run workers as Ray actors on this cluster ('auto' for the local one's address)")
    parser.add_argument("--ray", action="store_true", help="run workers as Ray actors on a new local Ray instance")
    parser.add_argument("--sync", action="store_true",
                        help="generation by generation: reproducible for a seed whatever the workers' speed")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides the YAML)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the evaluation cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_overrides(experiment, args: argparse.Namespace):
    """The experiment with the command line's settings on top."""
    update: dict = {}
    if args.budget is not None:
        update["budget"] = args.budget
    if args.seed is not None:
        update["seed"] = args.seed
    workers = experiment.workers.model_copy()
    if args.workers is not None:
        workers.count = args.workers
    if args.ray or args.ray_address:
        workers.kind = "ray"
        workers.ray_address = args.ray_address
    if args.sync:
        workers.mode = "sync"
    update["workers"] = workers
    if args.no_cache:
        update["cache"] = experiment.cache.model_copy(update={"enabled": False})
    data = {**experiment.to_dict(), **{k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
                                       for k, v in update.items()}}
    from evomerge.search.experiment import Experiment

    return Experiment.from_dict(data, where="command line")


def run(args: argparse.Namespace) -> int:
    from evomerge.errors import ExperimentError
    from evomerge.search.experiment import Experiment
    from evomerge.search.loop import run_search

    experiment = apply_overrides(Experiment.from_yaml(args.experiment), args)
    if args.budget is not None and args.budget < 1:
        raise ExperimentError("--budget must be at least 1")
    summary = run_search(experiment, args.out, resume=args.resume, progress=not args.no_progress)
    rungs = ", ".join(f"rung {i}: {n}" for i, n in enumerate(summary.evaluations_per_rung))
    print(f"{summary.finished} candidates ({summary.failed} failed) in {summary.seconds:.0f} s; "
          f"evaluations per fidelity: {rungs}; cache hits: {summary.cache_hits}")
    print(f"Pareto front: {len(summary.front)} member(s), trials {summary.front}; hypervolume {summary.hypervolume:.4g}")
    print(f"report: {summary.run_dir / 'report.html'}")
    print(f"list the front: evomerge front {summary.run_dir}")
    return 0
