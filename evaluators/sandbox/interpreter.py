"""The Python interpreter a sandboxed program runs with, and the one-line bootstrap that starts it.

Programs run with the evaluator's own interpreter (the base installation behind a virtualenv), in
isolated mode without `site` (`-I -S`): standard library only, no user or site-packages, no PYTHON*
variables, and no `.pth` start-up hooks (which cost ~90 ms per run on the CI machine).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache

PROGRAM_NAME = "main.py"


@dataclass(frozen=True)
class Interpreter:
    executable: str  # real path of the base interpreter (not a virtualenv symlink)
    prefixes: tuple[str, ...]  # real directories it needs read access to (stdlib, shared libraries)


@lru_cache(maxsize=1)
def current_interpreter() -> Interpreter:
    executable = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    prefixes = []
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(executable))):
        path = os.path.realpath(path)
        if path not in prefixes:
            prefixes.append(path)
    return Interpreter(executable, tuple(prefixes))


def bootstrap(ready_fd: int) -> str:
    """`-c` code that signals "started" on `ready_fd`, then runs ./main.py as `__main__`.

    The signal is what tells a sandbox set-up failure from a program failure. Without `site`, `exit`
    and `quit` are missing; generated code uses them, so they are restored. The scratch directory goes
    first on sys.path, as the script's directory would for `python main.py` (-I drops it).
    """
    return (
        "import os as _o,sys as _s,builtins as _b\n"
        f"_o.write({ready_fd},b'1');_o.close({ready_fd})\n"
        "_b.exit=_b.quit=_s.exit\n"
        f"_s.argv[0]=__file__={PROGRAM_NAME!r};_s.path.insert(0,_o.getcwd())\n"
        "del _o,_s,_b\n"
        "exec(compile(open(__file__,'rb').read(),__file__,'exec'))\n"
    )


@dataclass(frozen=True)
class ProgramStart:
    """The `-c` code the sandboxed interpreter starts with, and the descriptors it inherits for it.

    `fds` reach the program's first process only: the launchers pass them through and close their
    own copies (unshare_init closes them in the namespace's init).
    """

    code: str
    fds: tuple[int, ...]


def plain_start(ready_fd: int) -> ProgramStart:
    """Run ./main.py as `__main__` (see bootstrap)."""
    return ProgramStart(bootstrap(ready_fd), (ready_fd,))


def command(interpreter: Interpreter, start: ProgramStart, argv: list[str] | tuple[str, ...]) -> list[str]:
    return [interpreter.executable, "-I", "-S", "-c", start.code, *argv]

