"""CPU rehearsal of a search at a realistic size (issue 13 §3): per candidate merge / swap / evaluation seconds,
per worker peak, PSS and shared memory, against the memory plan.

    python benchmarks/scale_rehearsal.py --fixture fixtures/qwen-0.5b --out /tmp/rehearsal \
        [--configs host_mapped:auto:2,host_mapped:auto:1] [--candidates 4] [--limit 2] [--max-new-tokens 4]

The fixture is `evomerge fixture --preset 0.5b --agents 3 DIR` (base/ coding/ tool_use/ memory/; any preset
works, the tests use `tiny`). Each configuration `PLACEMENT:WORKSPACE_MIB:WORKERS` (workspace `none`: whole
tensors) is one `evomerge search` subprocess with `workers: {kind: local}` over a task-arithmetic space (one
weight per model and layer group; task arithmetic merges in row blocks, so the workspace bound applies), one
cheap suite with a tiny `--limit` and short generations (the fixture's weights are random: the scores mean
nothing, the times and bytes do). While it runs, the search's worker processes (its `spawn_main` children) are
sampled every `--interval` seconds: VmHWM (peak RSS), RSS split into anonymous / file / shmem pages, PSS, and
shared pages from /proc/PID/status and smaps_rollup. PSS charges a page shared by k processes 1/k to each, so
the largest sum of the workers' PSS at one instant is what the node held for them; the ratio of that sum
between a WORKERS=2 and a WORKERS=1 configuration of the same placement is the issue's "two workers vs one".
Times per candidate come from the run's trials.csv (merge_seconds, swap_seconds, eval_seconds).
The plan is RUN_DIR/plan.json when the search writes one, else `evomerge plan EXPERIMENT --json`.

Prints one table per configuration and writes everything to OUT/rehearsal.json; exit 0 when every search
finished with no failed candidate, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from proc_memory import process_memory

MiB = 2**20
GiB = 2**30
AGENTS = ("coding", "tool_use", "memory")


@dataclass(frozen=True)
class Config:
    placement: str
    workspace_mib: int | None | str  # MiB, None (whole tensors) or 'auto' (the search's default)
    workers: int

    @classmethod
    def parse(cls, text: str) -> "Config":
        try:
            placement, workspace, workers = text.split(":")
            return cls(placement, None if workspace == "none" else workspace if workspace == "auto" else int(workspace),
                       int(workers))
        except ValueError:
            raise SystemExit(f"--configs: {text!r} is not PLACEMENT:WORKSPACE_MIB:WORKERS (e.g. host_mapped:auto:2 or host_mapped:128:1; WORKSPACE_MIB: a number, auto or none)")

    @property
    def name(self) -> str:
        return f"{self.placement}-{self.workspace_mib or 'whole'}-x{self.workers}"


def experiment(args: argparse.Namespace, cfg: Config, cache: Path) -> dict:
    fixture = args.fixture.resolve()
    suite = {"kind": args.suite, "data": "toy", "limit": args.limit, "generation": {"max_new_tokens": args.max_new_tokens}}
    return {
        "name": f"rehearsal-{cfg.name}",
        "base": str(fixture / "base"),
        "models": {a: str(fixture / a) for a in AGENTS},
        "search_space": {"name": "ta_weights", "layer_groups": {"count": 2},
                         "methods": {"task_arithmetic": {"weight": {"low": 0.0, "high": 1.0, "per_model": True}}}},
        "dtype": "bfloat16",  # as the inputs are stored
        "objectives": {args.suite: suite},
        "optimizer": {"name": "random"},  # the cheapest: the optimiser is not what is measured
        "budget": args.candidates,
        "references": False,
        "heldout": {"enabled": False},
        "generator": {"backend": "hf", "dtype": args.engine_dtype, "options": {"batch_size": args.limit}},
        "workers": {"kind": "local", "count": cfg.workers, "placement": cfg.placement,
                    "workspace_mib": cfg.workspace_mib},
        "cache": {"enabled": False, "dir": str(cache)},
        "seed": 0,
    }


def children(pid: int) -> list[int]:
    """The worker processes of the search `pid`: its children started by multiprocessing's spawn (not its
    resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                ppid = next(int(line.split()[1]) for line in fh if line.startswith("PPid:"))
            if ppid == pid and b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except (OSError, StopIteration):  # gone meanwhile
            continue
    return found


def start_time(pid: int) -> int:
    """Clock ticks after boot at which `pid` started (field 22 of /proc/PID/stat): orders the workers."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def watch(proc: subprocess.Popen, interval: float) -> dict:
    """Sample the workers of the running search until it exits: per worker the largest value of each field
    (VmHWM only grows; its last reading is the peak), and the largest sums of PSS / RSS over the workers
    alive at one instant."""
    workers: dict[int, dict] = {}
    pss_sum = rss_sum = 0
    load_max = 0.0
    while proc.poll() is None:
        live = {}
        for pid in children(proc.pid):
            try:
                live[pid] = process_memory(pid)
                w = workers.setdefault(pid, {"pid": pid, "start": start_time(pid), "samples": 0, "max": {}})
            except OSError:
                continue
            w["samples"] += 1
            w["max"] = {k: max(v, w["max"].get(k, 0)) for k, v in live[pid].items()}
        pss_sum = max(pss_sum, sum(m["Pss"] for m in live.values()))
        rss_sum = max(rss_sum, sum(m["Rss"] for m in live.values()))
        load_max = max(load_max, float(Path("/proc/loadavg").read_text().split()[0]))
        time.sleep(interval)
    ordered = sorted(workers.values(), key=lambda w: (w["start"], w["pid"]))
    return {"workers": [{"pid": w["pid"], "samples": w["samples"], **w["max"]} for w in ordered],
            "pss_sum_peak": pss_sum, "rss_sum_peak": rss_sum, "load1_max": load_max}


def candidates(run_dir: Path) -> list[dict]:
    with open(run_dir / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"trial": int(r["trial"]), "state": r["state"], "worker": r["worker"], "failure": r["failure"],
             **{k: float(r[k]) if r.get(k) else None for k in ("merge_seconds", "swap_seconds", "eval_seconds")}}
            for r in rows]


def plan_of(run_dir: Path, exp_path: Path, out: Path) -> tuple[str, dict]:
    """(where the plan came from, the plan as `MemoryPlan.to_dict`)."""
    recorded = run_dir / "plan.json"
    if recorded.is_file():
        return str(recorded), json.loads(recorded.read_text())
    path = out / "plan.json"
    subprocess.run([sys.executable, "-m", "evomerge.cli", "plan", str(exp_path), "--json", str(path)],
                   check=False, stdout=subprocess.DEVNULL)  # exit 1 = refused; the JSON is written either way
    if not path.is_file():
        raise SystemExit(f"`evomerge plan {exp_path} --json {path}` wrote no plan")
    return f"evomerge plan {exp_path}", json.loads(path.read_text())


def plan_workers(plan: dict) -> list[dict]:
    """Per worker of the plan's first node: predicted host resident and peak bytes, and the components."""
    return [{"host_resident": w.get("host_resident"), "host_peak": w.get("host_peak"),
             "components": {c["name"]: c["bytes"] for c in w.get("components", [])}}
            for w in plan["nodes"][0]["workers"]]


def run_config(args: argparse.Namespace, cfg: Config) -> dict:
    import yaml

    out = args.out / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    exp_path, run_dir = out / "experiment.yaml", out / "run"
    exp_path.write_text(yaml.safe_dump(experiment(args, cfg, out / "cache"), sort_keys=False))
    cmd = [sys.executable, "-m", "evomerge.cli", "search", str(exp_path), "--out", str(run_dir), "--no-progress"]
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    with open(out / "search.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            memory = watch(proc, args.interval)
        finally:
            if proc.poll() is None:
                proc.kill()
    wall = time.perf_counter() - t0
    source, plan = plan_of(run_dir, exp_path, out)
    return {"config": cfg.name, "placement": cfg.placement, "workspace_mib": cfg.workspace_mib, "workers": cfg.workers,
            "command": " ".join(cmd), "returncode": proc.returncode, "wall_seconds": wall,
            "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
            "candidates": candidates(run_dir) if (run_dir / "trials.csv").is_file() else [],
            "memory": memory, "plan_source": source, "plan": plan_workers(plan), "plan_fits": plan.get("fits")}


def ratios(results: list[dict]) -> list[dict]:
    """Node memory (largest PSS sum) of each multi-worker configuration over its one-worker twin."""
    ones = {(r["placement"], r["workspace_mib"]): r for r in results if r["workers"] == 1}
    out = []
    for r in results:
        one = ones.get((r["placement"], r["workspace_mib"]))
        if r["workers"] > 1 and one and one["memory"]["pss_sum_peak"]:
            out.append({"config": r["config"], "over": one["config"],
                        "pss_sum_ratio": r["memory"]["pss_sum_peak"] / one["memory"]["pss_sum_peak"]})
    return out


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def table(r: dict) -> str:
    ws = r["workspace_mib"]
    ws = "whole tensors" if ws is None else "auto (the search's default)" if ws == "auto" else f"{ws} MiB"
    lines = [f"## {r['config']}: {r['workers']} local worker(s), placement {r['placement']}, workspace "
             f"{ws}; search exit {r['returncode']} in {r['wall_seconds']:.0f} s; "
             f"load {' '.join(r['loadavg_before'])} -> {' '.join(r['loadavg_after'])} (max 1-min {r['memory']['load1_max']})",
             "", "| trial | worker | merge s | swap s | eval s | state |", "|---|---|---|---|---|---|"]
    for c in r["candidates"]:
        f = {k: "-" if c[k] is None else f"{c[k]:.3f}" for k in ("merge_seconds", "swap_seconds", "eval_seconds")}
        lines.append(f"| {c['trial']} | {c['worker']} | {f['merge_seconds']} | {f['swap_seconds']} | "
                     f"{f['eval_seconds']} | {c['state']}{(': ' + c['failure'][:60]) if c['failure'] else ''} |")
    lines += ["", "| worker (pid) | peak VmHWM | PSS | RSS file | RSS shmem | shared | plan resident | plan peak | "
              "peak vs plan |", "|---|---|---|---|---|---|---|---|---|"]
    plan = r["plan"]
    for i, w in enumerate(r["memory"]["workers"]):
        p = plan[i] if i < len(plan) else {"host_resident": None, "host_peak": None}
        err = f"{(w['VmHWM'] - p['host_peak']) / p['host_peak']:+.1%}" if p["host_peak"] else "-"
        lines.append(f"| worker-{i} ({w['pid']}) | {gib(w['VmHWM'])} | {gib(w['Pss'])} | {gib(w['RssFile'])} | "
                     f"{gib(w['RssShmem'])} | {gib(w['Shared_Clean'] + w['Shared_Dirty'])} | "
                     f"{gib(p['host_resident'])} | {gib(p['host_peak'])} | {err} |")
    m = r["memory"]
    lines.append(f"\nnode: largest PSS sum {gib(m['pss_sum_peak'])} GiB, largest RSS sum {gib(m['rss_sum_peak'])} GiB "
                 f"(GiB throughout; plan from {r['plan_source']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=Path("fixtures/qwen-0.5b"),
                        help="base/ coding/ tool_use/ memory/ (evomerge fixture)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and rehearsal.json")
    parser.add_argument("--configs", default="host_mapped:auto:2,host_mapped:auto:1",
                        help="comma-separated PLACEMENT:WORKSPACE_MIB:WORKERS (workspace: MiB, 'auto' as a search's default, or 'none': whole tensors)")
    parser.add_argument("--candidates", type=int, default=4, help="search budget per configuration")
    parser.add_argument("--suite", default="memory", choices=("memory", "tool_use", "coding"),
                        help="the one objective (its toy data set)")
    parser.add_argument("--limit", type=int, default=2, help="items per candidate")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--engine-dtype", default=None, help="the hf engine's dtype (default: float32 on CPU)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    args = parser.parse_args(argv)
    for part in ("base", *AGENTS):
        if not (args.fixture / part / "config.json").is_file():
            raise SystemExit(f"{args.fixture / part}: no checkpoint (make one with `evomerge fixture`)")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for cfg in (Config.parse(c) for c in args.configs.split(",")):
        results.append(run_config(args, cfg))
        print(table(results[-1]) + "\n", flush=True)
        report = {"fixture": str(args.fixture.resolve()), "argv": sys.argv, "results": results,
                  "ratios": ratios(results)}
        # rewritten after each configuration: a long rehearsal cut short keeps what it measured
        (args.out / "rehearsal.json").write_text(json.dumps(report, indent=1) + "\n")
    for q in report["ratios"]:
        print(f"two workers vs one: {q['config']} / {q['over']} = {q['pss_sum_ratio']:.2f}x (largest PSS sums)")
    print(f"wrote {args.out / 'rehearsal.json'}")
    ok = all(r["returncode"] == 0 and r["candidates"] and all(c["state"] == "COMPLETE" for c in r["candidates"])
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
