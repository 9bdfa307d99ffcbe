"""Writing an output directory safely: all or nothing, never over an input, no debris after a kill.

`staged_output_dir` builds the output in a hidden sibling, `.<name>.partial-<pid>-<random>`, renamed
to the output only once everything is written. What each way of stopping leaves behind:
- an exception, Ctrl-C (KeyboardInterrupt), or SIGTERM / SIGHUP under `signals_raise()` (the CLI
  installs it): the staging directory is removed before the exception leaves the block;
- kill -9 (or a crash of the interpreter): the staging directory stays; the next merge to the same
  output removes it. A staging directory belongs to a dead process when both hold: its pid (in the
  name) is not running, and no process holds the `flock` its owner keeps on the directory for as long
  as it runs. The pid alone is not enough (after a kill -9 the pid may be reused, or the owner may run
  in another pid namespace or on another host sharing the folder); the lock alone is not enough (it is
  taken a moment after the directory is created). A concurrent merge to the same output keeps its
  staging directory: its pid is alive and its lock is held.

Errors of the file system (read-only folder, disk full, file-size limit, a file where a folder should
be) become a CheckpointError naming the output, with the staging directory removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from evomerge.errors import CheckpointError

STAGING_TAG = "partial"  # .<name>.partial-<pid>-<hex>: the merged checkpoint being written
TRASH_TAG = "old"  # .<name>.old-<pid>-<hex>: the output being replaced (--overwrite), removed at the end


def refuse_output_over_inputs(out_dir: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output directory that is an input, contains one, or lies inside one (symlinks
    resolved): writing it would replace or change a checkpoint that the merge reads."""
    out = Path(out_dir).expanduser().resolve()
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).expanduser().resolve()
        if out == inp:
            relation = "is the input"
        elif out in inp.parents:
            relation = "contains the input"
        elif inp in out.parents:
            relation = "is inside the input"
        else:
            continue
        raise CheckpointError(f"{out_dir}: the output {relation} {given}; write the merge to another directory")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _leftover_pattern(out_name: str, tag: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(out_name)}\.{tag}-(\d+)-[0-9a-f]+")


def remove_dead_leftovers(out_dir: str | Path) -> list[Path]:
    """Remove the staging (and replaced-output) directories of earlier writes to `out_dir` whose
    process is gone (see the module docstring); return what was removed."""
    out_dir = Path(out_dir).expanduser()
    parent = out_dir.parent
    if not parent.is_dir():
        return []
    removed = []
    for tag in (STAGING_TAG, TRASH_TAG):
        pattern = _leftover_pattern(out_dir.name, tag)
        for entry in parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if not match or _pid_alive(int(match.group(1))):
                continue
            if tag == STAGING_TAG:
                with _locked(entry, wait=False) as owned:
                    if owned:  # no living process holds it
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
            else:  # a replaced output: renamed away right before its removal, never locked
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def _locked(folder: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on `folder` (True), or yield False when another process holds it (or
    the folder is gone)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


# errors of a write() that does not say which file: the disk or quota is full, the file-size limit is hit
_UNNAMED_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _about_output(exc: OSError, *paths: Path) -> bool:
    """Whether an OSError came from writing the output: it names a file under one of `paths`, or it names
    no file and is one of the errors only a write gives (a failed read of an input is not the output's)."""
    if exc.filename is None:
        return exc.errno in _UNNAMED_WRITE_ERRORS
    name = Path(os.fsdecode(exc.filename)).expanduser().absolute()
    return any(name == p.absolute() or p.absolute() in name.parents for p in paths)


def _os_error(out_dir: Path, exc: OSError) -> CheckpointError:
    what = exc.strerror or str(exc)
    if exc.errno == errno.EFBIG:
        what += " (the file-size limit, `ulimit -f`, is below a shard: lower --shard-size or raise the limit)"
    return CheckpointError(f"{out_dir}: could not write the output: {what}")


@contextlib.contextmanager
def staged_output_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling of `out_dir`; rename it to `out_dir` only if the block succeeds.

    Any exception (Ctrl-C included) removes the staging directory, so a failed run leaves no output
    directory and no debris; an OSError of the file system is raised as a CheckpointError naming
    `out_dir`. With `overwrite`, an existing `out_dir` is replaced only at the very end.
    """
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir}: already exists; choose another directory or pass --overwrite")
    parent = out_dir.parent
    if not parent.is_dir():
        raise CheckpointError(f"{parent}: the parent directory of the output does not exist")
    remove_dead_leftovers(out_dir)
    pid = os.getpid()
    staging = parent / f".{out_dir.name}.{STAGING_TAG}-{pid}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise _os_error(out_dir, exc) from None
    try:
        with _locked(staging, wait=True):
            try:
                yield staging
                if out_dir.exists() or out_dir.is_symlink():
                    trash = parent / f".{out_dir.name}.{TRASH_TAG}-{pid}-{uuid.uuid4().hex[:8]}"
                    out_dir.rename(trash)
                    try:
                        staging.rename(out_dir)
                    except BaseException:
                        trash.rename(out_dir)  # the old output goes back where it was, not left under a hidden name
                        raise
                    shutil.rmtree(trash) if trash.is_dir() and not trash.is_symlink() else trash.unlink()
                else:
                    staging.rename(out_dir)
            except OSError as exc:
                if not _about_output(exc, staging, out_dir):
                    raise  # e.g. an input that cannot be read: not the output's fault
                raise _os_error(out_dir, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised in the main thread, like KeyboardInterrupt for Ctrl-C, so
    that every `finally` and `except BaseException` clean-up runs. A BaseException so that no
    `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated in the main thread (their default action
    kills the process before any clean-up). When Terminated leaves the block, the process then dies
    of the same signal with its default action, so a parent sees the usual exit status (-15 / 143).
    Outside the main thread (where signal handlers cannot be set) it does nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        for s in signums:  # one-shot: a second signal must not interrupt the clean-up of the first
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, raise_terminated) for s in signums}
    try:
        yield
    except Terminated as exc:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(exc.signum, signal.SIG_DFL)
        os.kill(os.getpid(), exc.signum)
        raise  # only if the signal was blocked
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
