"""The `evomerge` command: parses arguments and hands over to one module per subcommand.

Subcommand modules are imported only when chosen, so `evomerge --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from evaluators.progress import progress_allowed, quiet_libraries
from evomerge import __version__
from evomerge.errors import EvomergeError
from evomerge.exit_status import EPILOG, FAILED, INTERRUPTED, USAGE, error_line, verbosity_parent

# name -> (module under evomerge.commands, one-line help). An explicit table, no import magic.
COMMANDS: dict[str, tuple[str, str]] = {
    "merge": ("merge", "merge checkpoints as a recipe YAML says and write a Hugging Face checkpoint"),
    "recipe": ("recipe", "convert a recipe to or from a mergekit YAML (recipe convert SRC DST)"),
    "methods": ("methods", "list the merge methods, their parameters, defaults and valid values (--markdown: docs tables)"),
    "analyze": ("analyze", "task-vector statistics: density, unique/shared changes, RAM+ rho and lambda"),
    "search": ("search", "search for the best merges (NSGA-II/III, CMA-ES, TPE, GP, additive-model Thompson sampling, random) over agent benchmarks; Pareto front + report"),
    "front": ("front", "list a search run's Pareto front, or export a trial's recipe (and mergekit YAML)"),
    "evaluate": ("evaluate", "score a model on agent benchmarks (coding, tool_use, memory) and write per-item results"),
    "zoo": ("zoo", "build the tiny RL-trained agent zoo (base + coding / tool-use / memory GRPO agents)"),
    "sweep": ("sweep", "grid over merge methods and parameters, chosen on the search split: the paper's tables"),
    "fixture": ("fixture", "write a Qwen2.5-shaped bf16 base + RL-like agents (presets tiny, 0.5b, 1.5b, 7b)"),
    "plan": ("plan", "memory plan of an experiment per node and worker (headers only); refuses what cannot fit"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evomerge",
        description="Merge RL-trained LLM agents (RAM, RAM+, TIES, DARE, ...) and search for the best merge.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"evomerge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"evomerge.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           parents=[verbosity_parent()], epilog=EPILOG)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _dispatch(argv)[0]


def _dispatch(argv: list[str] | None) -> tuple[int, object | None]:
    """Run the chosen subcommand: (exit status, its module or None)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return USAGE, None
    if getattr(args, "no_progress", True) is False and not progress_allowed():
        args.no_progress = True  # stderr is no terminal, or TQDM_DISABLE is set
    try:
        with quiet_libraries(enabled_bars=not getattr(args, "no_progress", False)):
            return int(args._module.run(args) or 0), args._module
    except EvomergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED, args._module
    except OSError as exc:  # a read-only folder, a full disk, a missing file: the path and the reason
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return FAILED, args._module
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED, args._module


def console_main() -> None:
    """The console script: `main`, then for a finished one-shot command, exit without Python's teardown.

    Tearing down torch's modules at interpreter exit takes 0.3-0.7 s on a 2-core CPU (`python -c "import
    torch"` 1.8-2.4 s against 1.3-1.7 s with os._exit) - a third of a small `evomerge merge`. Commands that
    set EXIT_WITHOUT_TEARDOWN have closed every file they wrote before returning, so after flushing the
    standard streams and logging nothing is lost. Only on success: a failure exits the ordinary way.
    Long-running commands (search with Ray, vLLM) keep their atexit clean-ups, and so does a run under a
    profiler or tracer (cProfile, coverage), which writes its data at exit.
    """
    rc, module = _dispatch(sys.argv[1:])
    observed = sys.getprofile() is not None or sys.gettrace() is not None
    if rc == 0 and getattr(module, "EXIT_WITHOUT_TEARDOWN", False) and not observed:
        logging.shutdown()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # e.g. a closed pipe: leave it to the ordinary exit to report
            sys.exit(rc)
        os._exit(0)
    sys.exit(rc)


if __name__ == "__main__":
    console_main()
