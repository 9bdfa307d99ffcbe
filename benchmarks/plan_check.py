"""Check evomerge's memory plan against measurement: one CPU process builds a ResidentMerger on a fixture
(evomerge fixture) with a placement and a workspace bound, merges once per method, and compares the plan's
predicted host bytes (evomerge.memory_plan.build_plan for one CPU worker: runtime + inputs + workspace, and
the merge temporaries at the peak) with /proc/self/status: VmRSS after loading (runtime + inputs), VmRSS after
the first merge (+ the float32 workspace, now touched) and VmHWM over the merges (+ the largest method's
temporaries).

  PYTHONPATH=. python benchmarks/plan_check.py FIXTURE_DIR [--methods ram_plus,ties] [--placement host_mapped]
                                              [--workspace-mib 512|none] [--json out.json]

FIXTURE_DIR holds base/ and the agents (e.g. from `evomerge fixture --preset 0.5b FIXTURE_DIR`).
With placement host_mapped the inputs are the files' pages in the page cache: VmRSS counts them once they are
mapped and touched (the load checks every tensor), and a second process mapping the same files shares them;
the plan counts them once per node. Prints one line per quantity: predicted, measured, error; exits 1 when an
error exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from proc_memory import status_bytes  # noqa: E402 (after the environment is set)

PLANNED = ("runtime", "inputs", "workspace")  # the merger's part of a worker (the engine is not built here)


def predicted_bytes(fixture: Path, methods: list[str], placement: str, workspace: int | None) -> dict[str, int]:
    """The plan's host bytes of one CPU worker's merger after load, after the first merge and at the peak."""
    from evomerge.memory_plan import PlanRequest, build_plan
    from evomerge.plan_rules import rule_row_blockable

    base, models = _inputs(fixture)
    # the recipes below use each method's default parameters: ask the registry about exactly those rules
    blockable = {m: rule_row_blockable(m, {}, len(models)) for m in methods}
    plan = build_plan(PlanRequest(base=str(base), models=tuple(str(m) for m in models), methods=tuple(methods),
                                  placement=placement, workspace_bytes=workspace, row_blockable=blockable,
                                  host_memory=2**60))
    comps = {c.name.split(" (")[0]: c.bytes for c in plan.nodes[0].workers[0].components}
    load = comps["runtime"] + comps["inputs"]
    return {"after load (VmRSS)": load, "after merge (VmRSS)": load + comps["workspace"],
            "peak (VmHWM)": load + comps["workspace"] + comps["merge temporaries"]}


def _inputs(fixture: Path) -> tuple[Path, list[Path]]:
    agents = sorted(p.name for p in fixture.iterdir() if p.is_dir() and p.name != "base" and not p.name.startswith("."))
    return fixture / "base", [fixture / a for a in agents]


def check(fixture: Path, methods: list[str], tolerance: float, placement: str = "device",
          workspace: int | None = None) -> dict:
    import time

    import torch

    from evomerge.recipe import MergeRecipe
    from evomerge.resident import ResidentMerger

    base, models = _inputs(fixture)
    predicted = predicted_bytes(fixture, methods, placement, workspace)
    measured = {}
    t0 = time.perf_counter()
    merger = ResidentMerger(base, models, device="cpu", placement=placement, workspace_bytes=workspace)
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
    held = merger.memory_bytes()
    rows = []
    ok = True
    for key, pred in predicted.items():
        err = (pred - measured[key]) / measured[key]
        ok &= abs(err) <= tolerance
        rows.append({"quantity": key, "predicted": pred, "measured": measured[key], "error": err})
        print(f"{key:<22} predicted {pred / 2**20:10.1f} MiB  measured {measured[key] / 2**20:10.1f} MiB  "
              f"error {err * 100:+6.1f} %")
    print(f"placement {placement}, workspace {'whole tensors' if workspace is None else f'{workspace >> 20} MiB'}; "
          f"merger.memory_bytes() {json.dumps({k: round(v / 2**20, 1) for k, v in held.items()})} MiB; "
          f"load {load_s:.1f} s; merge seconds {json.dumps({k: round(v, 2) for k, v in seconds.items()})} "
          f"(torch threads {torch.get_num_threads()})")
    return {"fixture": str(fixture), "methods": methods, "placement": placement, "workspace_bytes": workspace,
            "rows": rows, "memory_bytes": held, "load_seconds": load_s, "merge_seconds": seconds, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--methods", default="ram_plus,ties,task_arithmetic")
    parser.add_argument("--placement", choices=["device", "host_mapped"], default="device")
    parser.add_argument("--workspace-mib", default="none",
                        help="ResidentMerger's row-block bound in MiB, or none (whole tensors; default)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    workspace = None if args.workspace_mib.lower() == "none" else int(args.workspace_mib) * 2**20
    result = check(args.fixture, args.methods.split(","), args.tolerance, args.placement, workspace)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
