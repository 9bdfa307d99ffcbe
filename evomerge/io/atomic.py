"""Atomic file helpers: every output is written to a temporary sibling and renamed into place.

A reader (or a resumed run) therefore sees the old file or the new one, never half of one, whatever
kills the writer. The temporary name is hidden (leading dot), unique per call (threads and processes
may write the same file), and removed when the write fails. `durable=True` also fsyncs the file
before the rename, for outputs that must survive a power cut, not only a killed process; small
bookkeeping files skip it (an fsync per evaluation-cache entry would cost more than it protects).
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence



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


def json_default(o: Any) -> Any:
    """The JSON form of the values the run records hold besides JSON's own: numpy scalars, sets and
    tuples (as lists), paths (as strings)."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json_atomic(path: str | Path, data: Any, default: Callable[[Any], Any] | None = json_default,
                      durable: bool = False) -> None:
    """`data` as indented JSON (keys in their order), newline-terminated; `default` as in json.dumps."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=default) + "\n", durable)


def canonical_json(data: Any) -> str:
    """One spelling per value (sorted keys, no spaces): what fingerprints and cache keys hash."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=json_default)


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def append_csv_row(path: str | Path, row: Sequence[Any]) -> None:
    """One row, flushed at once: `tail -f trials.csv` follows a running search."""
    with open(path, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(row)
        fh.flush()
