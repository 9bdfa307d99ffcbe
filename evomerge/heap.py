"""Keep freed tensor memory in the process heap instead of handing it back to the kernel.

A merge allocates and frees tensors of the same sizes tensor after tensor. glibc trims the free top of
its heap as soon as it exceeds twice the current mmap threshold, so the next tensor's memory is
mapped and faulted in again: a third to a half of a merge's system time on this project's 2-core
CPU. Here the heap is never trimmed and blocks up to MMAP_LIMIT (glibc's own largest dynamic mmap
threshold) come from it, so freed ones are reused. Bigger blocks keep their own mappings: a heap
that recycled them could hold a spare copy of one after fragmentation. Measured on the benchmark's
131M-parameter inputs (benchmarks/merge_speed.py, `evomerge merge`): page faults dare_ties 1.08M ->
0.61M, ram 0.54M -> 0.42M, peak RSS unchanged (+0.2 %); recycling blocks up to 128 MiB as well
halved the faults again but raised the peak by 5-40 %, depending on thread timing.

Only the one-shot `evomerge merge` process uses it. Not a long-running search worker: glibc's aligned
allocations leave a few spare blocks in a heap that is never trimmed, and over hundreds of candidates
that fragmentation could cost more memory than the faults cost time. Never on `import evomerge`:
a library must not change its host's allocator. A no-op outside glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_LIMIT = 32 * 2**20  # blocks up to this size come from the heap (glibc's DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_LIMIT = 2**31 - 1  # (mallopt takes an int) the heap's free top is never handed back

_done = False


def keep_freed_memory() -> bool:
    """Make glibc reuse freed large blocks (once per process); True when the settings took effect."""
    global _done
    if _done:
        return True
    libc = _glibc()
    try:
        ok = libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_LIMIT)) \
            and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_LIMIT))
    except AttributeError as exc:
        log.debug("mallopt unavailable: %s", exc)
        return False
    _done = ok
    return ok


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel now (glibc's malloc_trim(0)); True when some were.

    A search worker's start frees many blocks below the mmap threshold (the load-time NaN/inf check of
    every input tensor, the engine's dtype conversion); glibc keeps them in its heaps, and a long-lived
    worker would carry them for its whole life: 1.9 GiB per worker on the 0.5B fixture (docs/scale.md,
    "CPU rehearsal"). A no-op outside glibc."""
    libc = _glibc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError as exc:
        log.debug("malloc_trim unavailable: %s", exc)
        return False


def _glibc() -> "ctypes.CDLL | None":
    """This process's C library when it is glibc (whose malloc the two functions above tune), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as exc:
        log.debug("libc unavailable: %s", exc)
        return None
