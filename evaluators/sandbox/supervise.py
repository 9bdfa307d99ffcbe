"""Run one launched sandbox to the end: feed stdin, read output under a byte bound, enforce the wall clock.

Output is read as it arrives and only the first `max_output_bytes` of each stream are kept; past the
bound the sandbox is killed at once, so a flood costs neither memory nor time. A run whose output is
not its answer (a function-test run) asks for `truncate_output`: the excess is read and dropped, the
program goes on, and only the wall clock bounds a flood. The process starts in
a new session and is killed by process group; the launchers make that kill take the whole sandbox
with it (a pid namespace dies with its init; the limits-only mode also sweeps the run's uid).
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from .result import ProcessOutcome

_CHUNK = 65536
_MAX_SIGNAL = 64
_DRAIN_SECONDS = 1.0  # after the sandbox is gone, how long to wait for the last bytes in the pipes


@dataclass
class Launch:
    """How to start one sandboxed run; built by a launcher (bwrap, unshare, none)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    pass_fds: tuple[int, ...] = ()  # inherited by the sandbox; the parent's copies are closed after the spawn
    user: int | None = None  # setuid to this uid before exec (limits-only mode as root)
    signal_exit_codes: bool = False  # exit status 128+N means "killed by signal N" (bwrap, unshare helper)
    after_exit: Callable[[], None] | None = None  # extra sweep of stray processes
    cleanup: list[Callable[[], None]] = field(default_factory=list)


class _Streams:
    """The bounded output buffers and the stdin feed of one process."""

    def __init__(self, proc: subprocess.Popen, stdin: bytes, bound: int, truncate: bool = False):
        self.proc, self.bound, self.truncate = proc, bound, truncate
        self.out_fd, self.err_fd, self.in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
        self.buffers = {self.out_fd: bytearray(), self.err_fd: bytearray()}
        self.pending = memoryview(stdin)
        self.exceeded = False  # past the bound with truncate off: the sandbox gets killed
        self.truncated = False
        self.sel = selectors.DefaultSelector()
        for fd in self.buffers:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.open_outputs = 2
        if self.pending:
            os.set_blocking(proc.stdin.fileno(), False)
            self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            proc.stdin.close()

    def handle(self, fd: int) -> None:
        if fd in self.buffers:
            self._read(fd)
        elif fd == self.in_fd:
            self._write(fd)

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.sel.unregister(fd)
            self.open_outputs -= 1
            return
        buf = self.buffers[fd]
        room = self.bound - len(buf)
        buf += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
            self.exceeded = not self.truncate

    def _write(self, fd: int) -> None:
        try:
            self.pending = self.pending[os.write(fd, self.pending[:_CHUNK]):]
        except BlockingIOError:
            return
        except OSError:  # the program closed its stdin or exited
            self.pending = self.pending[:0]
        if not self.pending:
            self.sel.unregister(fd)
            self.proc.stdin.close()

    def drain(self) -> None:
        """Read what is left once every writer is gone (EOF soon), within a short grace period."""
        if not self.proc.stdin.closed:
            self.sel.unregister(self.in_fd)
            self.proc.stdin.close()
        end = time.monotonic() + _DRAIN_SECONDS
        while self.open_outputs and not self.exceeded:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in self.sel.select(timeout=remaining):
                if key.fd in self.buffers:
                    self._read(key.fd)

    def close(self) -> None:
        self.sel.close()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def supervise(launch: Launch, ready_read_fd: int, stdin: bytes, max_output_bytes: int,
              wall_seconds: float, truncate_output: bool = False) -> ProcessOutcome:
    start = time.monotonic()
    deadline = start + wall_seconds
    try:
        proc = subprocess.Popen(
            launch.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds, start_new_session=True,
            user=launch.user, group=launch.user, extra_groups=[] if launch.user is not None else None,
        )
    finally:
        for fd in launch.pass_fds:
            os.close(fd)
    streams = _Streams(proc, stdin, max_output_bytes, truncate_output)
    exit_fd = _pidfd(proc.pid)
    if exit_fd is not None:
        streams.sel.register(exit_fd, selectors.EVENT_READ)
    timed_out = False
    try:
        while streams.open_outputs and not streams.exceeded:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Without a pidfd, wake up now and then to notice an exit whose pipes a stray child holds.
            for key, _ in streams.sel.select(timeout=remaining if exit_fd is not None else min(remaining, 0.05)):
                if key.fd != exit_fd:
                    streams.handle(key.fd)
            if _has_exited(proc):
                break  # the sandbox's top process is gone: whatever still holds the pipes is a stray
        if timed_out or streams.exceeded:
            _kill_group(proc)
        elif not _wait_exit(proc, exit_fd, deadline):  # the pipes closed but the process lives on
            timed_out = True
            _kill_group(proc)
        _wait_exit(proc, exit_fd, None)
        # Still unreaped, so its pid (the group id) cannot have been reused: strays in the group die here.
        _kill_group(proc)
        returncode = proc.wait()
        if launch.after_exit is not None:
            launch.after_exit()
        if exit_fd is not None:
            streams.sel.unregister(exit_fd)
        streams.drain()
    finally:
        if proc.returncode is None:  # an exception above: never leave a sandbox running
            _kill_group(proc)
            proc.wait()
        streams.close()
        if exit_fd is not None:
            os.close(exit_fd)
    if launch.signal_exit_codes and 128 < returncode <= 128 + _MAX_SIGNAL:
        returncode = -(returncode - 128)  # exit(129..192) by choice reads as a signal too: rare, accepted
    return ProcessOutcome(
        returncode=returncode,
        stdout=bytes(streams.buffers[streams.out_fd]),
        stderr=bytes(streams.buffers[streams.err_fd]),
        truncated=streams.truncated,
        seconds=time.monotonic() - start,
        timed_out=timed_out,
        output_exceeded=streams.exceeded,
        started=_was_started(ready_read_fd),
    )


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the process has exited, without reaping it (WNOWAIT keeps its pid reserved)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(proc: subprocess.Popen, exit_fd: int | None, deadline: float | None) -> bool:
    """Block (up to the deadline) until the process exits, without reaping it; True once it has."""
    while not _has_exited(proc):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        if exit_fd is not None:  # a pidfd turns readable when its process exits
            select.select([exit_fd], [], [], remaining)
        else:
            time.sleep(0.005 if remaining is None else min(0.005, remaining))
    return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _was_started(ready_read_fd: int) -> bool:
    """The bootstrap wrote one byte before running the program; nothing else holds the pipe by now."""
    os.set_blocking(ready_read_fd, False)
    try:
        return bool(os.read(ready_read_fd, 1))
    except BlockingIOError:
        return False
