"""Sweep merge methods over a grid of parameters and write the paper-style table.

Scores the base, each model and every grid point of every method on the search split (the
objectives' split), chooses each method's point by its average over the objectives there, then
scores the chosen points on the held-out split: DIR/table.md and DIR/table.csv (rows = base, each
specialist, each method at its chosen point; columns = each objective and the average, with standard
errors), DIR/grid.csv (every point on the search split) and per-item results in DIR/items/. A finished
evaluation is never repeated: --resume continues a run, and the evaluation cache serves anything
scored before. The experiment YAML chooses the models with one switch, `model_set` (or --model-set).

examples:
  evomerge sweep experiments/paper/table1_three_agents.yaml --out runs/table1            # the toy zoo, CPU
  evomerge sweep experiments/paper/table1_three_agents.yaml --out runs/t1-quick --limit 8 --grid-max 2
  evomerge sweep experiments/paper/table1_three_agents.yaml --out runs/table1-paper --model-set paper \\
      --paths base=/models/Qwen2.5-7B-Instruct,coding=/models/ReasonFlux-Coder-7B,tool_use=/models/ToolRL,memory=/models/MemAgent
  evomerge sweep experiments/paper/pairs.yaml --out runs/pairs --resume
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="sweep experiment YAML (with a `sweep:` section)")
    parser.add_argument("--out", required=True, help="run directory (created; must be new unless --resume)")
    parser.add_argument("--model-set", default=None,
                        help="which of the YAML's model_sets to run (e.g. toy, paper); default: the YAML's model_set")
    parser.add_argument("--paths", default=None,
                        help="checkpoint directories replacing the model set's: name=path pairs separated by commas "
                             "(base=...,coding=...)")
    parser.add_argument("--workers", type=int, default=None, help="number of workers (overrides the YAML)")
    parser.add_argument("--worker-kind", choices=["local", "inline", "ray"], default=None,
                        help="local: worker processes (default); inline: this process; ray: Ray actors")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--limit", type=int, default=None,
                        help="score at most N items per objective on each split (a reduced run)")
    parser.add_argument("--grid-max", type=int, default=None,
                        help="at most K values per grid parameter, evenly spaced with both ends (a reduced run)")
    parser.add_argument("--methods", default=None, help="only these rows of the sweep, comma-separated (e.g. TA,RAM)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides the YAML)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the evaluation cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from evomerge.sweep import run_sweep
    from evomerge.sweep.experiment import load_sweep_experiment, parse_paths

    experiment = load_sweep_experiment(args.experiment, model_set=args.model_set, paths=parse_paths(args.paths))
    experiment = experiment.with_overrides(limit=args.limit, workers=args.workers, worker_kind=args.worker_kind,
                                           seed=args.seed, cache=False if args.no_cache else None)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    summary = run_sweep(experiment, args.out, resume=args.resume, progress=not args.no_progress,
                        grid_max=args.grid_max, methods=methods)
    print(summary.table.read_text())
    print(f"{summary.points} grid points; {summary.evaluations} evaluations in {summary.seconds:.0f} s "
          f"({summary.failed} failed, {summary.cache_hits} suite results from the cache)")
    print(f"table: {summary.table} (and table.csv); every grid point: {summary.run_dir / 'grid.csv'}")
    return 0
