"""Memory of a process as Linux reports it, for the memory benchmarks (imported by scripts run from
benchmarks/: `python benchmarks/plan_check.py ...` puts this folder first on the path)."""

from __future__ import annotations

STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
SMAPS_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Shared_Clean", "Shared_Dirty",
                "Private_Clean", "Private_Dirty")


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """Bytes of STATUS_FIELDS (/proc/PID/status: peak VmHWM, resident split into anonymous, file-backed and
    shared-memory pages) and SMAPS_FIELDS (/proc/PID/smaps_rollup: PSS charges a page shared by k processes
    1/k to each, so the PSS of all workers adds up to what the node holds for them). Raises OSError when
    the process is gone."""
    out: dict[str, int] = {}
    # smaps_rollup first: the peak VmHWM, read after, is then at least the Rss read before it (the kernel reports
    # the larger of its high-water mark and the current RSS); the other order failed a test by one page
    for path, fields in ((f"/proc/{pid}/smaps_rollup", SMAPS_FIELDS), (f"/proc/{pid}/status", STATUS_FIELDS)):
        with open(path) as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in fields:
                    out[key] = int(rest.split()[0]) * 1024
    if "VmHWM" not in out or "Pss" not in out:  # an exiting process (a zombie lists no memory)
        raise OSError(f"process {pid} has no memory to read (exiting)")
    return out
