"""Isolation with util-linux `unshare` when bubblewrap is missing: the same namespaces and root layout.

`unshare` creates the mount, pid, network, ipc and uts namespaces (plus a user namespace when
not root) and runs unshare_init.py as their pid 1, which builds the root and starts the program.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from .environment import program_environment
from .identity import kill_all_of
from .interpreter import Interpreter, ProgramStart, command
from .limits import MIB, SandboxLimits
from .rootfs import SCRATCH, TMP, root_layout
from .supervise import Launch
from .workspace import subdirectories

INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unshare_init.py")


def unshare_path() -> str | None:
    return shutil.which("unshare")


def build_unshare_launch(interpreter: Interpreter, files: list[tuple[str, int]], argv: list[str],
                         limits: SandboxLimits, start: ProgramStart, uid: int | None) -> Launch:
    layout = root_layout(interpreter)
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    mount_point = tempfile.mkdtemp(prefix="evomerge-sandbox-root-")  # stays empty on the host
    spec = {
        "root": mount_point,
        "readonly_dirs": list(layout.readonly_dirs),
        "symlinks": [list(link) for link in layout.symlinks],
        "masked_dirs": list(layout.masked_dirs),
        "scratch": SCRATCH,
        "tmp": TMP,
        "size": int(limits.scratch_mb * MIB),
        "uid": uid,
        "subdirs": subdirectories([(rel, b"") for rel, _ in files]),
        "files": [[rel, fd] for rel, fd in files],
        "program_fds": list(start.fds),
        "env": program_environment(home=SCRATCH, tmpdir=TMP),
        "command": [prlimit, *limits.prlimit_args(), "--", *command(interpreter, start, argv)],
    }
    args = [unshare_path() or "unshare"]
    if uid is None:
        args += ["--user", "--map-root-user"]
    args += ["--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts",
             "--propagation", "private", "--",
             interpreter.executable, "-I", "-S", INIT_SCRIPT, json.dumps(spec)]
    return Launch(argv=args, env={"PATH": "/usr/bin:/bin"}, pass_fds=(*start.fds, *(fd for _, fd in files)),
                  signal_exit_codes=True, cleanup=[lambda: os.rmdir(mount_point)],
                  # the pid namespace's teardown kills strays asynchronously: wait until they are gone
                  after_exit=(lambda: kill_all_of(uid)) if uid is not None else None)
