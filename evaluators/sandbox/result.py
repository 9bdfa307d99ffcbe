"""What one sandboxed run produced, and how a raw process outcome becomes a status with a reason."""

from __future__ import annotations

import signal
from dataclasses import dataclass

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error")


@dataclass(frozen=True)
class RunResult:
    """`status` is one of STATUSES; `reason` says why in a few words (empty when ok).

    `returncode` is the program's exit code, or minus the signal number that ended it; None when it
    never started. (Under bwrap / unshare an exit code of 129..192 reads as a signal, as in a shell.) `stdout` / `stderr` hold at most `max_output_bytes` each (`truncated` says if cut).
    `isolation` names the mode that ran it: "bwrap", "unshare" or "none".
    `verdict` is set only for a run with function tests (`Sandbox.run(..., tests=...)`): "passed" when
    the harness saw `check(candidate)` return, else why not (function_tests.py); None otherwise.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool
    seconds: float
    isolation: str
    reason: str = ""
    verdict: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def tests_passed(self) -> bool:
        return self.verdict == "passed"


@dataclass(frozen=True)
class ProcessOutcome:
    """The raw facts the supervisor observed, before classification."""

    returncode: int | None  # exit code, or -signal
    stdout: bytes
    stderr: bytes
    truncated: bool
    seconds: float
    timed_out: bool  # the wall-clock limit ran out and the supervisor killed the sandbox
    output_exceeded: bool  # stdout or stderr passed the bound and the supervisor killed the sandbox
    started: bool  # the interpreter inside the sandbox reached the program


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(outcome: ProcessOutcome, isolation: str) -> RunResult:
    stdout = outcome.stdout.decode("utf-8", errors="replace")
    stderr = outcome.stderr.decode("utf-8", errors="replace")
    rc = outcome.returncode
    tail = last_line(stderr)

    def result(status: str, reason: str = "") -> RunResult:
        return RunResult(status, rc, stdout, stderr, outcome.truncated, outcome.seconds, isolation, reason)

    # Our own kills come first: they explain the signal the program died of.
    if outcome.output_exceeded:
        return result("output_limit", "output exceeded the byte bound; the sandbox was killed")
    if outcome.timed_out:
        return result("timeout", "wall-clock limit exceeded; the sandbox was killed")
    if not outcome.started:
        return result("sandbox_error", f"the sandbox did not start the program (exit {rc}): {tail[:300]}")
    if rc == 0:
        return result("ok")
    if rc == -signal.SIGXCPU:
        return result("timeout", "CPU-time limit exceeded (SIGXCPU)")
    if tail.split(":", 1)[0].strip().endswith("MemoryError"):
        return result("memory", "memory limit exceeded (MemoryError)")
    if rc is not None and rc < 0:
        why = " (the hard CPU limit or the kernel)" if rc == -signal.SIGKILL else ""
        return result("killed", f"killed by {_signal_name(-rc)}{why}")
    return result("error", f"exit code {rc}: {tail[:300]}" if tail else f"exit code {rc}")
