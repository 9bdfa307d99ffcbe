"""keep_freed_memory: freed large blocks are reused from the heap, not mapped and faulted in again."""

import ctypes
import platform
import resource

import pytest

from evomerge import heap
from evomerge.heap import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
SIZE = 24 * 2**20  # below MMAP_LIMIT


def faults_per_round(libc, rounds: int) -> list[int]:
    """Page faults of rounds of: allocate three blocks, touch every page, free them (a merge's
    temporaries of one tensor, in miniature)."""
    libc.malloc.restype = ctypes.c_void_p
    out = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(SIZE) for _ in range(3)]
        assert all(blocks)
        for block in blocks:
            ctypes.memset(block, 1, SIZE)
        for block in reversed(blocks):
            libc.free(ctypes.c_void_p(block))
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning is glibc-only (a no-op elsewhere)")
def test_freed_large_blocks_are_reused_without_page_faults():
    libc = ctypes.CDLL("libc.so.6")
    pages = SIZE // resource.getpagesize()
    if not heap._done:  # this process is still on glibc's defaults: the freed top is trimmed every round
        assert min(faults_per_round(libc, 4)[1:]) > pages
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    faults_per_round(libc, 1)  # may grow the heap once
    assert max(faults_per_round(libc, 4)) < 0.1 * pages


@pytest.mark.skipif(GLIBC, reason="elsewhere the call must be a harmless no-op")
def test_no_op_outside_glibc():
    assert keep_freed_memory() is False
