"""Task-vector statistics of RL agents fine-tuned from one base (the RAM paper's Fig. 2, and more).

For each agent: the density of changed entries (|theta_agent - theta_base| > epsilon), the share of
its changes that are unique or shared with k other agents, rho_t = shared/unique (Eq. 2) and the
RAM+ factors lambda_t (Eq. 6 and the soft variant) -- over the whole model, per decoder layer and
per module type (attention, MLP, embeddings, norms, lm_head). Prints tables; optionally writes JSON
and a heat-map PNG. Reads one tensor at a time.

example:
  evomerge analyze --base base/ --models coder/ tool/ memory/ --json stats.json --plot stats.png
"""

from __future__ import annotations

import argparse

# run() returns only after the JSON report and the plot are closed on disk: the console script may skip Python's teardown
EXIT_WITHOUT_TEARDOWN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="base checkpoint directory")
    parser.add_argument("--models", required=True, nargs="+", help="agent checkpoint directories")
    parser.add_argument("--epsilon", type=float, default=1e-5,
                        help="change threshold |tau| > epsilon (default 1e-5, Eq. 1)")
    parser.add_argument("--r", type=float, default=0.1, help="RAM+ r for the lambda columns (default 0.1)")
    parser.add_argument("--alpha", type=float, default=2.0,
                        help="RAM+ alpha (rho clip) for the lambda column (default 2.0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--json", dest="json_path", help="write all statistics to this JSON file")
    parser.add_argument("--plot", dest="plot_path", help="write a heat-map PNG (per layer / module type x agent)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import os

    # Before torch loads OpenMP: spinning waiters make every large tensor op wait out a time slice for
    # a descheduled thread on a shared CPU (measured 5x slower merges); sleeping ones cost ~nothing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    from evomerge.analysis import analyze, format_report, plot_heatmap, write_json_report
    from evomerge.errors import EvomergeError

    for out in (args.json_path, args.plot_path):  # fail before the (long) pass, not after it
        if out and not Path(out).expanduser().resolve().parent.is_dir():
            raise EvomergeError(f"{out}: its directory does not exist")
    report = analyze(args.base, args.models, epsilon=args.epsilon, r=args.r, alpha=args.alpha,
                     device=args.device, progress=not args.no_progress)
    print(format_report(report))
    if args.json_path:
        write_json_report(report, args.json_path)
        print(f"wrote {args.json_path}")
    if args.plot_path:
        plot_heatmap(report, args.plot_path)
        print(f"wrote {args.plot_path}")
    return 0
