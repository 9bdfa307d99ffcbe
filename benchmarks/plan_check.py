"""Check evomerge's memory plan against measurement: one CPU process builds today's ResidentMerger on a
fixture (evomerge fixture), merges once per method, and compares the plan's predicted host bytes with
/proc/self/status: VmRSS after loading (runtime + inputs), VmRSS after the first merge (+ the float32
workspace, now touched) and VmHWM over the merges (+ the largest method's temporaries).

  PYTHONPATH=. python benchmarks/plan_check.py FIXTURE_DIR [--methods ram_plus,ties] [--json out.json]

FIXTURE_DIR holds base/ and the agents (e.g. from `evomerge fixture --preset 0.5b FIXTURE_DIR`).
Prints one line per quantity: predicted, measured, error; exits 1 when an error exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from proc_memory import status_bytes  # noqa: E402 (after the environment is set)


def check(fixture: Path, methods: list[str], tolerance: float) -> dict:
    import time

    import torch

    from evomerge.engine import ResidentMerger
    from evomerge.memory_plan import (
        RUNTIME_BYTES, ModelFacts, merge_temporaries_bytes, workspace_bytes,
    )
    from evomerge.recipe import MergeRecipe

    agents = sorted(p.name for p in fixture.iterdir() if p.is_dir() and p.name != "base" and not p.name.startswith("."))
    base, models = fixture / "base", [fixture / a for a in agents]
    facts = ModelFacts.from_checkpoint(base)
    inputs = facts.stored_bytes * (len(models) + 1)
    workspace = workspace_bytes(len(models), facts.max_float_numel)
    predicted = {
        "after load (VmRSS)": RUNTIME_BYTES + inputs,
        "after merge (VmRSS)": RUNTIME_BYTES + inputs + workspace,
        "peak (VmHWM)": RUNTIME_BYTES + inputs + workspace + merge_temporaries_bytes(methods, facts.max_float_numel),
    }
    measured = {}
    t0 = time.perf_counter()
    # The plan models the whole-tensor workspace ((agents + 1) rows of the largest tensor), which is what a
    # search keeps once any non-row-blockable rule (TIES, DARE, Breadcrumbs at density < 1) merges the largest
    # tensor; ResidentMerger's default row blocks stay below it. Check the model where it is exact.
    merger = ResidentMerger(base, models, device="cpu", workspace_bytes=None)
    load_s = time.perf_counter() - t0
    measured["after load (VmRSS)"] = status_bytes("VmRSS")
    seconds = {}
    for method in methods:
        recipe = MergeRecipe(base=str(base), models=[str(m) for m in models], method=method, dtype="bfloat16")
        t0 = time.perf_counter()
        for _name, tensor in merger.merge(recipe):
            del tensor  # streamed, as into an engine: one merged tensor alive at a time
        seconds[method] = time.perf_counter() - t0
        measured.setdefault("after merge (VmRSS)", status_bytes("VmRSS"))
    measured["peak (VmHWM)"] = status_bytes("VmHWM")
    rows = []
    ok = True
    for key, pred in predicted.items():
        err = (pred - measured[key]) / measured[key]
        ok &= abs(err) <= tolerance
        rows.append({"quantity": key, "predicted": pred, "measured": measured[key], "error": err})
        print(f"{key:<22} predicted {pred / 2**20:10.1f} MiB  measured {measured[key] / 2**20:10.1f} MiB  "
              f"error {err * 100:+6.1f} %")
    print(f"load {load_s:.1f} s; merge seconds {json.dumps({k: round(v, 2) for k, v in seconds.items()})} "
          f"(torch threads {torch.get_num_threads()})")
    return {"fixture": str(fixture), "parameters": facts.parameters, "methods": methods, "rows": rows,
            "load_seconds": load_s, "merge_seconds": seconds, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--methods", default="ram_plus,ties,task_arithmetic")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    result = check(args.fixture, args.methods.split(","), args.tolerance)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
