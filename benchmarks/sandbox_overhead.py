"""Per-program overhead of each sandbox isolation mode against a bare `python -I -S` start.

    python benchmarks/sandbox_overhead.py [RUNS]

Prints the median wall time of RUNS sequential trivial programs per mode, and the throughput of
`run_many` (200 programs, 2 workers). Modes that do not work on this machine are skipped.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time

from evaluators.sandbox import ISOLATIONS, Sandbox, SandboxUnavailable
from evaluators.sandbox.interpreter import current_interpreter


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
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
        print(f"{mode}: {per_run:.1f} ms/run (+{per_run - bare:.1f} over bare); "
              f"run_many 200 x 2 workers: {batch:.1f} ms/program")


if __name__ == "__main__":
    main()
