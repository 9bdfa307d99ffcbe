"""Isolation with bubblewrap: new pid, network, ipc, uts and cgroup namespaces and a minimal read-only root.

As root, bwrap sets the namespaces up with real privileges and `setpriv` then drops the program to a
throwaway uid with no capabilities (see identity.py for why). As another user, bwrap adds a user
namespace and the program keeps that user's uid, with no capabilities; `prlimit` runs inside that
namespace, so RLIMIT_NPROC counts only the sandbox's processes, not all of the user's (per-namespace
counts, Linux >= 5.14).
"""

from __future__ import annotations

import shutil

from .environment import program_environment
from .identity import kill_all_of
from .interpreter import Interpreter, ProgramStart, command
from .limits import MIB, SandboxLimits
from .rootfs import SCRATCH, TMP, parents, root_layout
from .supervise import Launch
from .workspace import subdirectories


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def drop_privileges(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--"]


def build_bwrap_launch(interpreter: Interpreter, files: list[tuple[str, int]], argv: list[str],
                       limits: SandboxLimits, start: ProgramStart, uid: int | None) -> Launch:
    """`files` are (relative path, readable fd); `uid` is the throwaway uid when running as root, else None."""
    layout = root_layout(interpreter)
    size = str(int(limits.scratch_mb * MIB))
    args = [bwrap_path() or "bwrap", "--die-with-parent", "--new-session",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if uid is None:
        args.append("--unshare-user")
    args.append("--clearenv")
    for key, value in program_environment(home=SCRATCH, tmpdir=TMP).items():
        args += ["--setenv", key, value]
    made: set[str] = set()
    for directory in layout.readonly_dirs:
        for parent in parents(directory):
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]  # bwrap would make them 0700: unreachable after the uid drop
        args += ["--ro-bind", directory, directory]
    for path in layout.masked_dirs:
        args += ["--perms", "0555", "--size", "4096", "--tmpfs", path, "--remount-ro", path]
    for path, target in layout.symlinks:
        args += ["--symlink", target, path]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",  # POSIX semaphores (multiprocessing)
             "--perms", "1777", "--size", size, "--tmpfs", TMP,
             # Root owns the tmpfs when the program runs as a throwaway uid: let that uid write.
             "--perms", "0777" if uid is not None else "0700", "--size", size, "--tmpfs", SCRATCH]
    for sub in subdirectories([(rel, b"") for rel, _ in files]):
        args += ["--perms", "0777" if uid is not None else "0700", "--dir", f"{SCRATCH}/{sub}"]
    for rel, fd in files:
        args += ["--perms", "0666" if uid is not None else "0600", "--file", str(fd), f"{SCRATCH}/{rel}"]
    args += ["--remount-ro", "/", "--chdir", SCRATCH, "--"]
    if uid is not None:
        args += drop_privileges(uid)
    args += ["prlimit", *limits.prlimit_args(), "--", *command(interpreter, start, argv)]
    return Launch(argv=args, env={"PATH": "/usr/bin:/bin"}, pass_fds=(*start.fds, *(fd for _, fd in files)),
                  signal_exit_codes=True,
                  # the pid namespace's teardown kills strays asynchronously: wait until they are gone
                  after_exit=(lambda: kill_all_of(uid)) if uid is not None else None)
