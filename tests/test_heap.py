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


RELEASE_SCRIPT = """
import ctypes, sys
from evomerge.heap import release_free_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
MB = 2**20
def anon():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))
libc.free(ctypes.c_void_p(libc.malloc(16 * MB)))  # glibc raises its mmap threshold: 8 MiB blocks now come from the heap
blocks = [libc.malloc(8 * MB) for _ in range(32)]
for b in blocks:
    ctypes.memset(b, 1, 8 * MB)
top = libc.malloc(8 * MB)  # in use above them (no free chunk is that large): the heap's top cannot shrink
for b in blocks:
    libc.free(ctypes.c_void_p(b))
kept = anon()
released = release_free_memory()
print(released, (kept - anon()) // MB)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
def test_release_free_memory_hands_freed_heap_blocks_back(tmp_path):
    import subprocess
    import sys

    # a fresh process: this one's heap state depends on the tests before
    done = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, timeout=120)
    released, freed_mib = done.stdout.split()
    assert released == "True" and int(freed_mib) >= 200, done.stdout + done.stderr  # of the 256 MiB freed
