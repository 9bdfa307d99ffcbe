"""Merge time of whole-tensor vs row-blocked merges, alternating in one process, with a bit-identity check.

    python benchmarks/row_block_speed.py --fixture fixtures/qwen-0.5b --methods ties,dare_ties \
        --workspace-mib 512 --rounds 2

Two ResidentMergers on the same memory-mapped inputs (placement host_mapped): one with a workspace of the
whole largest tensor (workspace_bytes None), one bounded by --workspace-mib (rules whose method allows it are
merged in row blocks, with their whole-tensor statistics gathered in a first pass). After one warm-up merge
each, the two are timed alternately (whole, blocked, whole, ...), so both see the same machine load. Prints
one JSON line per method: wall and CPU seconds per merge of each, their ratio, and whether the merged tensors
are the same bytes (SHA-256 over every tensor). --fixture: a directory with base/ and one directory per agent
(`evomerge fixture`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

PARAMS = {
    "ties": {"density": 0.3}, "breadcrumbs_ties": {"density": 0.3, "gamma": 0.01}, "breadcrumbs": {"density": 0.3},
    "dare_ties": {"density": 0.3}, "dare_linear": {"density": 0.3}, "task_arithmetic": {"weight": [0.4, 0.3, 0.3]},
}


def fixture_inputs(root: Path) -> tuple[str, list[str]]:
    agents = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "base" and (p / "config.json").is_file())
    if not (root / "base" / "config.json").is_file() or not agents:
        raise SystemExit(f"{root}: expected base/ and agent directories with config.json (evomerge fixture)")
    return str(root / "base"), [str(p) for p in agents]


def timed_merge(merger, recipe, digest: bool) -> tuple[float, float, str]:
    import torch

    h = hashlib.sha256()
    wall, cpu = time.perf_counter(), time.process_time()
    for name, tensor in merger.merge(recipe):
        if digest:  # hashing is excluded from the timed merges (digest=False)
            h.update(name.encode())
            h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        del tensor
    return time.perf_counter() - wall, time.process_time() - cpu, h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, required=True)
    parser.add_argument("--methods", default="ties,dare_ties")
    parser.add_argument("--workspace-mib", type=float, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from evomerge.recipe import MergeRecipe
    from evomerge.resident import ResidentMerger

    base, models = fixture_inputs(args.fixture)
    whole = ResidentMerger(base, models, device="cpu", placement="host_mapped", workspace_bytes=None)
    blocked = ResidentMerger(base, models, device="cpu", placement="host_mapped",
                             workspace_bytes=int(args.workspace_mib * 2**20))
    for method in args.methods.split(","):
        params = dict(PARAMS.get(method, {}))
        if "weight" in params and len(params["weight"]) != len(models):
            params["weight"] = [1.0 / len(models)] * len(models)
        recipe = MergeRecipe.from_dict({"method": method, "base": base, "models": models, "parameters": params,
                                        "seed": 1})
        digests = {"whole": timed_merge(whole, recipe, True)[2], "blocked": timed_merge(blocked, recipe, True)[2]}
        times: dict[str, list[tuple[float, float]]] = {"whole": [], "blocked": []}
        for _ in range(args.rounds):
            for label, merger in (("whole", whole), ("blocked", blocked)):
                wall, cpu, _ = timed_merge(merger, recipe, False)
                times[label].append((round(wall, 2), round(cpu, 2)))
        mean = {k: sum(w for w, _ in v) / len(v) for k, v in times.items()}
        mean_cpu = {k: sum(c for _, c in v) / len(v) for k, v in times.items()}
        print(json.dumps({
            "method": method, "params": params, "workspace_mib": args.workspace_mib,
            "whole_s": times["whole"], "blocked_s": times["blocked"],  # (wall, cpu) per timed merge
            "blocked_over_whole_wall": round(mean["blocked"] / mean["whole"], 3),
            "blocked_over_whole_cpu": round(mean_cpu["blocked"] / mean_cpu["whole"], 3),
            "same_bytes": digests["whole"] == digests["blocked"], "digest": digests["whole"],
            "workspace_bytes": {"whole": whole.memory_bytes()["workspace"],
                                "blocked": blocked.memory_bytes()["workspace"]},
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }), flush=True)


if __name__ == "__main__":
    main()
