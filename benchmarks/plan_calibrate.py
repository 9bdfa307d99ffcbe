"""Measure the constants of evomerge's memory plan (evomerge/memory_plan.py) on this CPU.

- per method: the peak extra memory of merging one tensor (beyond the operands the workspace
  already holds), in float32 copies of that tensor, measured as VmHWM growth (the peak is reset
  through /proc/self/clear_refs) while `merge_tensor` runs on a tensor of NUMEL entries with
  task vectors of the paper's densities, plus the cast of the result to bf16 as ResidentMerger.merge does;
- the resident memory of a worker process before any model (python + torch + evomerge imported);
- the CPU time per parameter of a merge (per method: filling the workspace from bf16 inputs, the method,
  the cast to bf16; one thread) and per byte of a bf16 swap into a float32 module.

Each method runs in a fresh process. Run:
  PYTHONPATH=. python benchmarks/plan_calibrate.py --numel 16777216
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from proc_memory import status_bytes  # noqa: E402 (after the environment is set)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak RSS (VmHWM) to the current RSS
        fh.write("5")


def one_method(method: str, numel: int, agents: int) -> dict:
    import time

    import torch

    from evomerge.engine import merge_tensor
    from evomerge.recipe import MergeRecipe
    from evomerge.taskvectors import overlap_counts

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    densities = [0.032, 0.462, 0.543, 0.242, 0.275][:agents]
    rows = torch.empty((agents + 1, numel))  # the workspace: base row + task-vector rows
    rows[0].normal_(0, 0.02, generator=gen)
    for i, d in enumerate(densities):
        rows[i + 1] = (torch.rand(numel, generator=gen) < d) * torch.randn(numel, generator=gen) * 1e-4
    stored = [(rows[0] + (rows[i] if i else 0)).to(torch.bfloat16) for i in range(agents + 1)]  # bf16 inputs
    base, deltas = rows[0], list(rows[1:])
    models = ["m0", "m1"] if method == "slerp" else [f"m{i}" for i in range(agents)]
    if method == "slerp":
        deltas = deltas[:2]
    recipe = MergeRecipe(base=None if method == "slerp" else "b", models=models, method=method)
    rule = recipe.rule_for("w")
    eps = rule.parameters.get("epsilon")
    overlaps = {float(eps): overlap_counts(deltas, float(eps)).as_global_overlap(float(eps))} if eps is not None else {}
    merge_tensor("w", base, deltas, rule, 0, overlaps).to(torch.bfloat16)  # warm-up: allocator and code paths
    rss = status_bytes("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    for row, values in zip(rows, stored):  # ResidentMerger.operands: bf16 -> float32 rows, then task vectors
        row.copy_(values)
    rows[1:].sub_(rows[:1])
    merged = merge_tensor("w", base, deltas, rule, 0, overlaps)
    out = merged.to(torch.bfloat16)
    seconds = time.perf_counter() - t0
    peak = status_bytes("VmHWM")
    del merged, out
    return {"method": method, "extra_float32_copies": (peak - rss) / (numel * 4),
            "seconds_per_parameter": seconds / numel}


def process_baseline() -> dict:
    import torch  # noqa: F401

    import evomerge.engine  # noqa: F401
    import evomerge.methods.registry  # noqa: F401

    return {"runtime_bytes": status_bytes("VmRSS")}


def swap_cost(numel: int) -> dict:
    """Seconds per byte of copying a bf16 tensor into a float32 module parameter (the hf backend's swap on a CPU)."""
    import time

    import torch

    torch.set_num_threads(1)
    src = torch.randn(numel).to(torch.bfloat16)
    dst = torch.empty(numel)
    dst.copy_(src)
    t0 = time.perf_counter()
    for _ in range(3):
        dst.copy_(src)
    return {"swap_seconds_per_byte": (time.perf_counter() - t0) / 3 / (numel * 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=1 << 24)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = (process_baseline() if args.child == "@baseline" else swap_cost(args.numel)
                  if args.child == "@swap" else one_method(args.child, args.numel, args.agents))
        print(json.dumps(result))
        return
    from evomerge.methods.registry import METHODS

    methods = args.methods.split(",") if args.methods else list(METHODS)
    results = []
    for child in ["@baseline", "@swap", *methods]:
        out = subprocess.run([sys.executable, __file__, "--child", child, "--numel", str(args.numel),
                              "--agents", str(args.agents)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
