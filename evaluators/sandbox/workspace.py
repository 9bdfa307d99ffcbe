"""The files a run starts with: the program as main.py plus the caller's extra files.

Paths are checked before anything runs: relative, inside the scratch directory, no `..`.
The namespace modes hand the contents over as memory file descriptors (no copy on the host disk);
the limits-only mode writes them into a fresh host directory.
"""

from __future__ import annotations

import os
import posixpath
from typing import Mapping

from .errors import WorkspaceError
from .interpreter import PROGRAM_NAME


def workspace_files(code: str, files: Mapping[str, str | bytes] | None) -> list[tuple[str, bytes]]:
    entries = [(PROGRAM_NAME, code.encode("utf-8"))]
    for name, content in (files or {}).items():
        rel = _safe_relative(name)
        if rel == PROGRAM_NAME:
            raise WorkspaceError(f"files[{name!r}] clashes with the program itself ({PROGRAM_NAME}); rename it")
        data = content if isinstance(content, bytes) else str(content).encode("utf-8")
        entries.append((rel, data))
    return entries


def _safe_relative(name: str) -> str:
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        raise WorkspaceError(f"file name {name!r} is not a plain relative path")
    norm = posixpath.normpath(name)
    if posixpath.isabs(name) or norm == "." or norm.startswith("../") or norm == "..":
        raise WorkspaceError(f"file name {name!r} must stay inside the scratch directory (relative, no '..')")
    return norm


def subdirectories(entries: list[tuple[str, bytes]]) -> list[str]:
    """Every directory the files need, parents before children."""
    dirs: set[str] = set()
    for rel, _ in entries:
        parent = posixpath.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def memory_fds(entries: list[tuple[str, bytes]]) -> list[tuple[str, int]]:
    """One memory file per entry, positioned at its start; the caller closes them."""
    out = []
    try:
        for rel, data in entries:
            fd = os.memfd_create("sandbox-file", 0)
            out.append((rel, fd))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        close_fds(fd for _, fd in out)
        raise
    return out


def write_into(directory: str, entries: list[tuple[str, bytes]]) -> None:
    for sub in subdirectories(entries):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    for rel, data in entries:
        with open(os.path.join(directory, rel), "wb") as f:
            f.write(data)


def close_fds(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
