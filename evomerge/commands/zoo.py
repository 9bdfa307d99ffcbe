"""The tiny RL-trained agent zoo: a base model and three GRPO agents (coding, tool use, memory).

`zoo build DIR` trains, deterministically from --seed: a byte-level BPE tokenizer on the committed
corpus, a small Qwen2 base pretrained on the three toy families (correct and flawed replies), and
one agent per family by on-policy GRPO rewarded by the suites' own scorers. It writes DIR/base,
DIR/coding, DIR/tool_use, DIR/memory (bf16 Hugging Face checkpoints) and DIR/zoo.json (held-out
scores of every model on every family, task-vector densities, timings). About 15 minutes on a
2-core CPU; --quick builds a much smaller zoo in about a minute (a smoke test of the builder).

`zoo data` rewrites the toy suite data (evaluators/data/toy/*.jsonl) from the generators.

The builder is its own package, evomerge_zoo (beside the library: it uses evomerge, evomerge never
imports it); this command only parses the arguments and imports it when run.

examples:
  evomerge zoo build zoo/ --seed 0
  evomerge zoo build /tmp/zoo-smoke --quick
  evomerge analyze --base zoo/base --models zoo/coding zoo/tool_use zoo/memory
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    build = sub.add_parser("build", help="train the base and the three agents into DIR")
    build.add_argument("dir", metavar="DIR", help="output directory (must not exist, or be empty)")
    build.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    build.add_argument("--quick", action="store_true", help="a much smaller, faster build (for tests)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    data = sub.add_parser("data", help="rewrite the toy suite data files from the generators")
    data.add_argument("--out", help="write into this directory instead of evaluators/data/toy/")


def run(args: argparse.Namespace) -> int:
    if args.zoo_command == "data":
        from pathlib import Path

        from evomerge_zoo.toy_data import write_toy_data

        for family, path in write_toy_data(Path(args.out) if args.out else None).items():
            print(f"{family}: {path}")
        return 0

    from evomerge_zoo.build import build_zoo

    summary = build_zoo(args.dir, seed=args.seed, quick=args.quick, show_progress=not args.no_progress)
    print(summary["heldout_test_markdown"])
    print()
    for agent, stats in summary["task_vectors"]["model"]["agents"].items():
        print(f"{agent}: density {100 * stats['density']:.1f}% (paper {100 * summary['paper_density'][agent]:.1f}%), "
              f"unique {100 * (stats['unique_share'] or 0):.1f}% of its changes")
    print(f"built {args.dir} in {summary['seconds']['total'] / 60:.1f} min")
    return 0
