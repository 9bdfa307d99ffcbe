"""Memory of this process as Linux reports it, for the memory benchmarks (imported by scripts run from
benchmarks/: `python benchmarks/plan_check.py ...` puts this folder first on the path)."""

from __future__ import annotations


def status_bytes(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...) in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")
