"""`Sandbox`: run untrusted Python programs, one isolated process tree each, many in parallel.

Isolation modes, strongest first (`isolation="auto"` takes the first that works here, probed once per
process): "bwrap" (bubblewrap), "unshare" (util-linux, same namespaces and root layout), "none"
(limits only, with a loud warning). Every mode applies the same limits (limits.py), builds the
environment from scratch, gives the program a fresh scratch directory as cwd, and bounds its output.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from .bwrap_launcher import build_bwrap_launch, bwrap_path
from .errors import SandboxUnavailable
from .function_tests import FunctionTests, TestChannel, harness_start, open_channel, read_verdict, verdict_without_message
from .identity import allocate_uid, release_uid, running_as_root
from .interpreter import current_interpreter, plain_start
from .limits import SandboxLimits
from .limits_only_launcher import build_limits_only_launch, interpreter_reachable_by_others
from .result import RunResult, classify
from .supervise import Launch, supervise
from .unshare_launcher import build_unshare_launch, unshare_path
from .workspace import close_fds, memory_fds, workspace_files

logger = logging.getLogger(__name__)

ISOLATIONS = ("auto", "bwrap", "unshare", "none")
NAMESPACE_MODES = ("bwrap", "unshare")
# A generous wall clock: a probe that times out on a loaded machine would silently weaken isolation.
_PROBE_LIMITS = SandboxLimits(wall_seconds=60.0, cpu_seconds=5.0, memory_mb=256, max_output_bytes=4096)
_probe_results: dict[str, str | None] = {}  # mode -> None when it works, else why not
_probe_lock = threading.Lock()
_warned_limits_only = False


class Sandbox:
    """Runs Python source in an isolated, resource-limited process; see the module docstring."""

    def __init__(self, limits: SandboxLimits | None = None, isolation: str = "auto"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits = limits or SandboxLimits()
        self.isolation = resolve_isolation(isolation)

    def run(self, code: str, stdin: str | bytes = "", argv: Sequence[str] = (),
            files: Mapping[str, str | bytes] | None = None, *, limits: SandboxLimits | None = None,
            tests: FunctionTests | None = None) -> RunResult:
        """Run `code` as ./main.py with `argv`, `stdin` and extra `files` in its scratch directory.

        With `tests`, ./main.py is the candidate module and the result's `verdict` says whether
        `check(candidate)` passed (function_tests.py); its output is truncated at the bound, not killed.
        `limits` overrides the sandbox's limits for this run. A hostile or broken program never raises:
        it comes back as a failure status with a reason. Unsafe file names raise WorkspaceError.
        """
        return execute(self.isolation, code, stdin, list(argv), files, limits or self.limits, tests)

    def run_many(self, runs: Sequence[Mapping[str, Any]], max_workers: int | None = None) -> list[RunResult]:
        """Run each `Sandbox.run` keyword set, up to `max_workers` at once (default: CPU count); order kept.

        One failing run (even a bad argument) becomes a "sandbox_error" result and never stops the others.
        """
        if not runs:
            return []
        workers = max(1, min(max_workers or os.cpu_count() or 1, len(runs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(self._run_contained, runs))

    def _run_contained(self, kwargs: Mapping[str, Any]) -> RunResult:
        try:
            return self.run(**kwargs)
        except Exception as exc:  # noqa: BLE001 (one run's failure must not stop the batch)
            logger.debug("sandbox run failed before it started", exc_info=True)
            return RunResult("sandbox_error", None, "", "", False, 0.0, self.isolation,
                             reason=f"{type(exc).__name__}: {exc}")


def execute(mode: str, code: str, stdin: str | bytes, argv: list[str], files: Mapping[str, str | bytes] | None,
            limits: SandboxLimits, tests: FunctionTests | None = None) -> RunResult:
    """One run under a resolved isolation mode (no probing, no warning)."""
    entries = workspace_files(code, files)
    stdin_bytes = stdin.encode("utf-8") if isinstance(stdin, str) else bytes(stdin)
    interpreter = current_interpreter()
    uid = None
    if running_as_root() and (mode in NAMESPACE_MODES or interpreter_reachable_by_others(interpreter)):
        uid = allocate_uid()
    ready_read, ready_write = os.pipe()
    unspawned: list[int] = [ready_write]  # fds to close here if the launch is never spawned
    launch: Launch | None = None
    channel: TestChannel | None = None
    try:
        start = plain_start(ready_write)
        if tests is not None:
            channel = open_channel(tests)
            unspawned += channel.spawn_fds
            start = harness_start(ready_write, channel)
        if mode == "none":
            launch = build_limits_only_launch(interpreter, entries, argv, limits, start, uid)
        else:
            fds = memory_fds(entries)
            unspawned += [fd for _, fd in fds]
            build = build_bwrap_launch if mode == "bwrap" else build_unshare_launch
            launch = build(interpreter, fds, argv, limits, start, uid)
        unspawned = []  # supervise closes the launch's fds once the sandbox has them
        outcome = supervise(launch, ready_read, stdin_bytes, limits.max_output_bytes, limits.wall_seconds,
                            truncate_output=tests is not None)
        verdict = read_verdict(channel) if channel is not None else None
    except OSError as exc:
        logger.warning("sandbox (%s) could not start a program: %s", mode, exc)
        reason = f"could not start the sandbox: {exc}"
        return RunResult("sandbox_error", None, "", "", False, 0.0, mode, reason=reason,
                         verdict=None if tests is None else f"sandbox error: {reason}")
    finally:
        close_fds(unspawned)
        os.close(ready_read)
        if channel is not None:
            os.close(channel.result_read)
        for step in launch.cleanup if launch is not None else ():
            try:
                step()
            except OSError as exc:
                logger.warning("sandbox cleanup failed: %s", exc)
        if uid is not None:
            release_uid(uid)
    result = classify(outcome, mode)
    if tests is not None:
        verdict = verdict if verdict is not None else verdict_without_message(result.status, result.reason)
        result = dataclasses.replace(result, verdict=verdict)
    return result


def probe(mode: str) -> str | None:
    """None when `mode` runs a trivial program correctly here (cached per process), else the reason it does not."""
    with _probe_lock:
        if mode not in _probe_results:
            _probe_results[mode] = _probe_uncached(mode)
        return _probe_results[mode]


def _probe_uncached(mode: str) -> str | None:
    if mode == "bwrap" and bwrap_path() is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install -y bubblewrap)"
    if mode == "unshare" and unshare_path() is None:
        return "util-linux `unshare` is not installed"
    try:
        result = execute(mode, "print(6 * 7)", "", [], None, _PROBE_LIMITS)
    except Exception as exc:  # noqa: BLE001 (any failure means the mode is unusable)
        return f"{type(exc).__name__}: {exc}"
    if result.status != "ok" or result.stdout.strip() != "42":
        return f"status {result.status} ({result.reason}); stderr: {result.stderr.strip()[-300:]}"
    return None


def resolve_isolation(requested: str) -> str:
    """The mode to use for `requested`; raises SandboxUnavailable when an explicit namespace mode fails."""
    if requested in NAMESPACE_MODES:
        why = probe(requested)
        if why is not None:
            raise SandboxUnavailable(f"isolation={requested!r} does not work here: {why}. "
                                     "Use isolation='auto' to fall back to what works.")
        return requested
    if requested == "auto":
        reasons = []
        for mode in NAMESPACE_MODES:
            why = probe(mode)
            if why is None:
                return mode
            reasons.append(f"{mode}: {why}")
        _warn_limits_only("; ".join(reasons))
        return "none"
    _warn_limits_only("isolation='none' was requested")
    return "none"


def _warn_limits_only(why: str) -> None:
    global _warned_limits_only
    if _warned_limits_only:
        return
    _warned_limits_only = True
    as_root = ""
    if running_as_root():
        as_root = (" Programs run under a throwaway uid." if interpreter_reachable_by_others(current_interpreter())
                   else " Programs run AS ROOT (the interpreter is not reachable by an unprivileged uid): they can "
                        "read and write anything, kill any process, and the process-count limit is not enforced.")
    logger.warning(
        "!!! SANDBOX WITHOUT OS ISOLATION (limits only) !!! (%s) Untrusted programs keep CPU, memory, file-size, "
        "output and wall-clock limits and a clean environment, but they CAN use the network, read any file "
        "their user can read, and write to world-writable places.%s Install bubblewrap "
        "(apt-get install -y bubblewrap) or enable unprivileged user namespaces.", why, as_root)
