"""Throwaway user ids for sandboxed programs when the evaluator runs as root.

Why: as root, RLIMIT_NPROC is not enforced (the kernel exempts uid 0), `kill -9 -1` reaches every
process on the machine, and file permissions protect nothing. Each run therefore gets its own
unprivileged uid that no account or other run uses: the process limit then counts only that run's
processes, a stray `kill -1` reaches only that run, and DAC keeps it out of root's files.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time

# Far above any account, system range or container subordinate-uid block (which usually start at 100000
# and span 65536 each), and below the 2**32-1 "no uid" value.
_UID_LOW, _UID_HIGH = 1_500_000_000, 2_100_000_000
_in_use: set[int] = set()
_lock = threading.Lock()


def running_as_root() -> bool:
    return os.geteuid() == 0


def allocate_uid() -> int:
    """A fresh uid for one run (unique among this process's live runs); give it back with release_uid."""
    with _lock:
        while True:
            uid = _UID_LOW + secrets.randbelow(_UID_HIGH - _UID_LOW)
            if uid not in _in_use:
                _in_use.add(uid)
                return uid


def release_uid(uid: int) -> None:
    with _lock:
        _in_use.discard(uid)


def processes_of(uid: int) -> list[int]:
    """Live pids whose real uid is `uid` (from /proc; zombies are already dead and are skipped)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                status = dict(line.split(b":", 1) for line in f if b":" in line)
            if int(status[b"Uid"].split()[0]) == uid and status[b"State"].split()[0] not in (b"Z", b"X"):
                pids.append(int(entry))
        except (OSError, ValueError, KeyError, IndexError):
            continue  # the process ended while we looked
    return pids


def kill_all_of(uid: int, patience: float = 2.0) -> int:
    """SIGKILL every process running as `uid` until none is left (a process may fork while we scan, and a
    killed one takes a moment to die on a loaded machine), for at most `patience` seconds; return the count.

    Without a pid namespace this is what ends strays. With one, killing the namespace's init kills the
    rest, but asynchronously: the sweep also waits until they are really gone before the run returns.
    """
    killed = 0
    deadline = time.monotonic() + patience
    pause = 0.001
    while True:
        pids = processes_of(uid)
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(pause)  # let the kills land before looking again
        pause = min(2 * pause, 0.05)
