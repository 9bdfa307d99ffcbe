"""Atomic file helpers: every output is written to a temporary sibling and renamed into place.

A reader (or a resumed run) therefore sees the old file or the new one, never half of one, whatever
kills the writer. The temporary name is hidden (leading dot), unique per call (threads and processes
may write the same file), and removed when the write fails. `durable=True` also fsyncs the file
before the rename, for outputs that must survive a power cut, not only a killed process; small
bookkeeping files skip it (an fsync per evaluation-cache entry would cost more than it protects).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable



def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden, unique name next to `path` (same directory, so the final rename stays on one filesystem)."""
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}")


def replace_atomically(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call `write(tmp)` to fill a temporary sibling of `path`, then rename it over `path`.

    The parent directory is created when missing. On any error (Ctrl-C included) the temporary file is
    removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)


def write_bytes_atomic(path: str | Path, data: bytes, durable: bool = False) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data), durable)


def write_json_atomic(path: str | Path, data: Any, default: Callable[[Any], Any] | None = None,
                      durable: bool = False) -> None:
    """`data` as indented JSON (keys in their order), newline-terminated; `default` as in json.dumps."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=default) + "\n", durable)
