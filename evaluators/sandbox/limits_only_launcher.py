"""The last resort where namespaces are unavailable: rlimits, a fresh scratch directory, a clean environment.

Not contained here: network access, reads of world-readable files, writes to world-writable places
(/tmp, /dev/shm). As root, the program runs under a throwaway uid when the interpreter is reachable by
one (then the process limit holds and `kill -1` reaches only this run); otherwise it runs as root with
root's rights, and the warning in sandbox.py says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .environment import program_environment
from .identity import kill_all_of
from .interpreter import Interpreter, ProgramStart, command
from .limits import SandboxLimits
from .supervise import Launch
from .workspace import write_into


def interpreter_reachable_by_others(interpreter: Interpreter) -> bool:
    """Whether an unprivileged uid can run the interpreter: every directory on the way is world-searchable."""
    for prefix in interpreter.prefixes:
        path = ""
        for part in prefix.strip("/").split("/"):
            path += "/" + part
            try:
                if not os.stat(path).st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


def build_limits_only_launch(interpreter: Interpreter, entries: list[tuple[str, bytes]], argv: list[str],
                             limits: SandboxLimits, start: ProgramStart, uid: int | None) -> Launch:
    scratch = tempfile.mkdtemp(prefix="evomerge-sandbox-")
    try:
        write_into(scratch, entries)
        if uid is not None:
            for directory, subdirs, names in os.walk(scratch):
                os.chown(directory, uid, uid)
                for name in names:
                    os.chown(os.path.join(directory, name), uid, uid)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    return Launch(
        argv=[prlimit, *limits.prlimit_args(), "--", *command(interpreter, start, argv)],
        env=program_environment(home=scratch, tmpdir=scratch),
        cwd=scratch,
        pass_fds=start.fds,
        user=uid,
        after_exit=(lambda: kill_all_of(uid)) if uid is not None else None,
        cleanup=[lambda: _remove_tree(scratch)],
    )


def _remove_tree(path: str) -> None:
    """Delete the scratch directory even where the program removed permissions from its own files."""
    def make_writable_and_retry(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        except OSError:
            pass
        func(target)

    shutil.rmtree(path, onerror=make_writable_and_retry)
