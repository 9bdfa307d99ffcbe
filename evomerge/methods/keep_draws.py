"""DARE's keep masks on the CPU: seeded uniform draws in fixed streams, filled on several threads.

torch's CPU generator (mt19937) fills one tensor on one thread at 7-11 ns per entry: for dare_ties of
three ~131M-parameter agents that was 2.8 s of a 6.6 s merge. Here a tensor's draws are cut into
streams of STREAM entries; stream s comes from numpy's SFC64 seeded with SeedSequence([seed, s]), so
the mask depends on (seed, entry index) only - not on the thread count or the order streams finish.
numpy releases the GIL while it fills and compares, so torch.get_num_threads() threads share the
streams (2.5-4 ns per entry on two cores, measured on 0.2M-25M-entry tensors). A stream is small
enough (1 MiB of float32) to be drawn, compared and written while it is still in the core's cache.
numpy keeps each BitGenerator's stream fixed across versions, and Generator.random's float32 mapping (the top
24 bits of a 32-bit draw times 2^-24) has not changed since numpy 1.17; a test pins golden masks regardless.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

STREAM = 1 << 18  # entries per random stream: part of the mask's definition, never tune it per machine

_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool per process and thread count (a pool inherited through fork has no threads)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="evomerge-dare"))
        return _pool[2]


def keep_mask(numel: int, density: float, seed: int, start: int = 0) -> torch.Tensor:
    """A new float32 CPU tensor of `numel` entries, those of flat indices [start, start + numel) of a
    tensor's mask: 1.0 where a uniform draw u in [0, 1) is below float32(density) (probability `density`),
    else 0.0 - computed as ceil(density - u) in float32, which is 1 exactly when u < density. For one seed,
    masks are nested across densities. Any split of a tensor into ranges gives the same entries."""
    out = torch.empty(numel, dtype=torch.float32)
    values = out.numpy()
    threshold = np.float32(density)
    stop = start + numel

    def fill(stream: int) -> None:
        a, b = max(start, stream * STREAM), min(stop, (stream + 1) * STREAM)  # entries of the range in it
        chunk = values[a - start:b - start]
        generator = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, stream])))
        skip = a - stream * STREAM
        if skip:  # the range starts inside the stream: draw its first entries and drop them
            generator.random(skip, dtype=np.float32)
        generator.random(out=chunk, dtype=np.float32)
        np.subtract(threshold, chunk, out=chunk)
        np.ceil(chunk, out=chunk)

    streams = range(start // STREAM, -(-stop // STREAM)) if numel else range(0)
    workers = min(len(streams), max(1, torch.get_num_threads()))
    if workers <= 1:
        for stream in streams:
            fill(stream)
    else:
        for _ in _executor(workers).map(fill, streams):
            pass  # re-raises a stream's error here
    return out


def stream_seed(seed: int, stream: int) -> int:
    """The seed of torch's generator for stream `stream` of a GPU mask (63 bits, as manual_seed takes)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)


def stream_draws(numel: int, seed: int, start: int, device: torch.device) -> torch.Tensor:
    """Uniform float32 draws for flat indices [start, start + numel) of a tensor on a GPU: stream s (entries
    [s STREAM, (s+1) STREAM)) is torch.rand(STREAM) from a generator on `device` seeded with
    stream_seed(seed, s), drawn whole (torch's GPU kernels assign their random offsets by tensor size), so
    any split of the tensor into ranges gives the same draws."""
    out = torch.empty(numel, dtype=torch.float32, device=device)
    stop = start + numel
    generator = torch.Generator(device=device)
    for stream in (range(start // STREAM, -(-stop // STREAM)) if numel else ()):
        a, b = max(start, stream * STREAM), min(stop, (stream + 1) * STREAM)
        generator.manual_seed(stream_seed(seed, stream))
        draw = torch.rand(STREAM, generator=generator, device=device, dtype=torch.float32)
        out[a - start:b - start] = draw[a - stream * STREAM:b - stream * STREAM]
    return out
