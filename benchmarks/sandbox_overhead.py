"""Per-program overhead of each sandbox isolation mode against a bare `python -I -S` start.

    python benchmarks/sandbox_overhead.py [RUNS] [HUMANEVAL_ITEMS]

Prints the median wall time of RUNS sequential trivial programs per mode, the throughput of
`run_many` (200 programs, 2 workers), and the coding harness's throughput: the canonical solutions of
the first HUMANEVAL_ITEMS (default 80) HumanEval problems scored with `score_items` on 2 workers,
tests included (best of 3 rounds). Modes that do not work on this machine are skipped.
The HumanEval part uses only `score_items(items, completions, sandbox, max_workers)`, so the same
script measures an older checkout (PYTHONPATH=that checkout) for a before / after comparison.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time

from evaluators.sandbox import ISOLATIONS, Sandbox, SandboxUnavailable
from evaluators.sandbox.interpreter import current_interpreter
from evaluators.suites.coding import score_items
from evaluators.suites.coding_data import load_items, resolve_data


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def humaneval_ms_per_program(sandbox: Sandbox, items: list, rounds: int = 3) -> float:
    """Best-of-`rounds` wall time per program of scoring the canonical solutions on 2 workers; all must pass."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        results = score_items(items, [[it["canonical_solution"]] for it in items], sandbox, max_workers=2)
        best = min(best, (time.perf_counter() - start) / len(items) * 1000)
        failed = [(r.id, r.reason) for r in results if not r.passed]
        assert not failed, f"canonical solutions failed (a machine too loaded for the time limit?): {failed}"
    return best


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    humaneval_items = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    items = load_items(resolve_data("humaneval"))[:humaneval_items]
    logging.disable(logging.WARNING)  # the limits-only mode warns loudly; expected here
    exe = current_interpreter().executable
    bare = median_ms(lambda: subprocess.run([exe, "-I", "-S", "-c", "pass"], check=True), runs)
    print(f"bare python -I -S: {bare:.1f} ms")
    for mode in (m for m in ISOLATIONS if m != "auto"):
        try:
            sandbox = Sandbox(isolation=mode)
        except SandboxUnavailable as exc:
            print(f"{mode}: unavailable here ({exc})")
            continue
        assert sandbox.run("pass").ok
        per_run = median_ms(lambda: sandbox.run("pass"), runs)
        start = time.perf_counter()
        results = sandbox.run_many([{"code": "print(1)"}] * 200, max_workers=2)
        batch = (time.perf_counter() - start) / 200 * 1000
        assert all(r.ok for r in results)
        coding = humaneval_ms_per_program(sandbox, items) if items else float("nan")
        print(f"{mode}: {per_run:.1f} ms/run (+{per_run - bare:.1f} over bare); "
              f"run_many 200 x 2 workers: {batch:.1f} ms/program; "
              f"HumanEval with tests ({len(items)} canonical, 2 workers): {coding:.1f} ms/program")


if __name__ == "__main__":
    main()
