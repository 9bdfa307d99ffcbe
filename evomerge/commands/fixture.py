"""Write a Qwen2.5-shaped bf16 base and RL-like agents (sparse task vectors of a few bf16 steps) as
Hugging Face checkpoints: OUT/base, OUT/coding, OUT/tool_use, OUT/memory (for measuring memory and
speed at a realistic size without downloading anything).

Presets: tiny (tests), 0.5b, 1.5b, 7b (Qwen2.5's real shapes). Densities default to the RAM paper's
measurements of Qwen2.5-7B RL agents (coding 3.2 %, tool use 46.2 %, memory 54.3 %). Streamed: the
0.5b preset needs about 0.6 GB of memory; its four checkpoints take 4 GB of disk (7b: 61 GB).

example:
  evomerge fixture --preset 0.5b --agents 3 fixtures/qwen-0.5b
"""

from __future__ import annotations

import argparse

EXIT_WITHOUT_TEARDOWN = True  # every file is closed (and renamed into place) before run() returns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evomerge.fixture import PRESETS

    parser.add_argument("out_dir", help="directory for base/ and one directory per agent")
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model shape (default tiny)")
    parser.add_argument("--agents", type=int, default=3, help="number of agents, 1-5 with the paper's densities (default 3)")
    parser.add_argument("--densities", default=None,
                        help="comma-separated densities instead of the paper's, e.g. 0.1,0.3 (agents agent1, agent2, ...)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--shard-size", default="5GB", help="largest safetensors file (default 5GB, as the Hub)")
    parser.add_argument("--headers-only", action="store_true",
                        help="zero data in sparse files (no disk, no generation): enough for `evomerge plan`")
    parser.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer files")
    parser.add_argument("--overwrite", action="store_true", help="replace existing checkpoints of the same names")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import time

    from evomerge.errors import EvomergeError
    from evomerge.fixture import AgentSpec, FixtureSpec, paper_agents, write_fixture

    if args.densities:
        try:
            values = [float(v) for v in args.densities.split(",")]
        except ValueError:
            raise EvomergeError(f"--densities {args.densities!r}: give numbers separated by commas") from None
        agents = tuple(AgentSpec(f"agent{i + 1}", d) for i, d in enumerate(values))
    else:
        agents = paper_agents(args.agents)
    spec = FixtureSpec(args.preset, agents, seed=args.seed, shard_size=args.shard_size,
                       with_tokenizer=not args.no_tokenizer, headers_only=args.headers_only)
    t0 = time.perf_counter()
    result = write_fixture(spec, args.out_dir, overwrite=args.overwrite)
    print(f"wrote {len(result.paths)} checkpoints of {result.parameters:,} parameters "
          f"({result.bytes_per_model / 1e9:.2f} GB of bf16 each) in {time.perf_counter() - t0:.1f} s:")
    for name, path in result.paths.items():
        print(f"  {name}: {path}")
    return 0
