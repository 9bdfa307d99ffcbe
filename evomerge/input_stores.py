"""Where a ResidentMerger's float inputs live (its `placement`): private copies on the device, read-only
memory maps of the safetensors files (shared by every process of a node through the page cache), or a
compact form of each agent (a packed bitmask of changed entries plus their values).

Each store fills float32 operand rows for a span of a tensor's flattened entries; evomerge.resident
drives them and evomerge.row_blocks merges the rows.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.errors import CheckpointError
from evomerge.io.reader import CheckpointSet, check_finite
from evomerge.io.safetensors_format import require_little_endian

if TYPE_CHECKING:
    import torch


def tensor_nbytes(t: "torch.Tensor") -> int:
    return t.numel() * t.element_size()


class InputStore:
    """Where the float inputs of a ResidentMerger live. `fill(name, span, rows)` writes entries
    [span) of the flattened base (or zeros) into rows[0] and of model t into rows[t + 1], as float32."""

    def load(self, inputs: CheckpointSet, name: str) -> None: ...

    def fill(self, name: str, span: tuple[int, int], rows: "torch.Tensor") -> None: ...

    def float32_views(self, name: str, span: tuple[int, int]):
        raise NotImplementedError  # only the device store keeps float32 task vectors

    def private_bytes(self) -> int:
        return 0

    def mapped_bytes(self) -> int:
        return 0

    def staging_bytes(self) -> int:
        return 0


class DeviceStore(InputStore):
    """Private copies on the device: native dtype, or float32 task vectors (keep='float32')."""

    def __init__(self, device: "torch.device", keep: str):
        self.device = device
        self.keep = keep
        self.base: dict[str, torch.Tensor] = {}  # flattened; absent without a base (zeros)
        self.models: dict[str, list[torch.Tensor]] = {}

    def load(self, inputs, name):
        import torch

        base_t = inputs.read(inputs.base, name, self.device) if inputs.base is not None else None
        weights = [inputs.read(m, name, self.device).reshape(-1) for m in inputs.models]
        if self.keep == "float32":
            # the same float32 operations as the workspace path: identical task vectors
            base32 = (base_t.reshape(-1).to(torch.float32) if base_t is not None
                      else torch.zeros(weights[0].shape, device=self.device))
            self.base[name] = base32
            self.models[name] = [w.to(torch.float32, copy=True).sub_(base32) for w in weights]
        else:
            if base_t is not None:
                self.base[name] = base_t.reshape(-1)
            self.models[name] = weights

    def fill(self, name, span, rows):
        a, b = span
        if name in self.base:
            rows[0].copy_(self.base[name][a:b])
        else:
            rows[0].zero_()
        for row, weights in zip(rows[1:], self.models[name]):
            row.copy_(weights[a:b])

    def float32_views(self, name, span):
        a, b = span
        return self.base[name][a:b], [m[a:b] for m in self.models[name]]

    def private_bytes(self):
        return sum(tensor_nbytes(t) for t in self.base.values()) + sum(tensor_nbytes(t) for ts in self.models.values() for t in ts)


class MappedStore(InputStore):
    """Read-only views of memory maps of the weight files, one map per file for the store's life.

    MAP_SHARED and PROT_READ: the pages are the page cache itself, shared with every process mapping
    the file, and a stray write is a fault rather than a private copy. The files must not be rewritten
    or truncated while a merger maps them (a page past a file's new end is a SIGBUS, not an exception:
    sizes are checked once, at load); checkpoints are written once and then only read, so this holds
    for the search's inputs. torch.frombuffer warns about
    non-writable buffers; the views are only ever read (copied into the workspace).
    """

    def __init__(self, inputs: CheckpointSet, device: "torch.device"):
        self.device = device
        self._maps: dict[Path, mmap.mmap] = {}
        self.views: dict[str, list[torch.Tensor | None]] = {}  # per tensor: base (or None), models
        self._staging = None  # pinned host buffer, for a GPU device
        self._mapped = 0
        for ckpt in inputs.all:
            for file in ckpt.files:
                if file not in self._maps:
                    require_little_endian()
                    with open(file, "rb") as fh:
                        self._maps[file] = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                    self._mapped += len(self._maps[file])

    def _view(self, info) -> "torch.Tensor":
        import warnings

        import torch

        mapped = self._maps[info.file]
        if len(mapped) < info.offset + info.nbytes:  # a page past the end of a map is a SIGBUS
            raise CheckpointError(f"{info.file}: file ended inside tensor '{info.name}' (truncated while in use?)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            raw = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
        return raw.view(getattr(torch, info.dtype))

    def load(self, inputs, name):
        views = []
        for ckpt in [inputs.base, *inputs.models]:
            if ckpt is None:
                views.append(None)
                continue
            info = ckpt.tensors[name]
            view = self._view(info)
            check_finite(view, info.file, name)  # once, at load: the same check as every reader path
            views.append(view)
        self.views[name] = views

    def fill(self, name, span, rows):
        import torch

        a, b = span
        for row, view in zip(rows, self.views[name]):
            if view is None:
                row.zero_()
            elif row.device.type == "cpu":
                row.copy_(view[a:b])
            else:  # host-streamed: through one pinned buffer, a fast host-to-device copy
                part = view[a:b]
                nbytes = tensor_nbytes(part)
                if self._staging is None or self._staging.numel() < nbytes:
                    self._staging = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                staged = self._staging[:nbytes].view(part.dtype)
                staged.copy_(part)
                row.copy_(staged)  # synchronous: the staging buffer is reused by the next fill

    def mapped_bytes(self):
        return self._mapped

    def staging_bytes(self):
        return 0 if self._staging is None else tensor_nbytes(self._staging)


def _int_view(t: "torch.Tensor") -> "torch.Tensor":
    """The stored bits of `t` as integers of its size: 'changed' means different bits, so -0.0 vs 0.0
    counts as a change and the reconstruction is bit for bit."""
    import torch

    return t.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


class CompactDelta:
    """One agent's weights for one tensor as the entries whose stored bits differ from the base's.

    mask: packed bits (uint8, little bit order: entry i is bit i % 8 of byte i // 8), values: the
    changed entries in the stored dtype in entry order, before: number of changed entries before each
    byte of the mask (int64 per 8 entries would be 8x the mask: kept per 4096-entry chunk instead).
    """

    CHUNK = 4096  # entries per prefix count: a block start is found from one count plus < 4096 bits

    def __init__(self, base: "torch.Tensor", weights: "torch.Tensor"):
        import torch

        changed = _int_view(weights.reshape(-1)) != _int_view(base.reshape(-1))
        self.numel = changed.numel()
        self.values = weights.reshape(-1)[changed]
        self.mask = pack_bits(changed)
        counts = changed.to(torch.int64)
        padded = torch.nn.functional.pad(counts, (0, -self.numel % self.CHUNK))
        self.before = torch.cat([counts.new_zeros(1), padded.view(-1, self.CHUNK).sum(1).cumsum(0)])

    def nbytes(self) -> int:
        return tensor_nbytes(self.mask) + tensor_nbytes(self.values) + tensor_nbytes(self.before)

    def changed(self, a: int, b: int) -> "torch.Tensor":
        """Bool mask of entries [a, b)."""
        first = a // 8
        bits = unpack_bits(self.mask[first:(b + 7) // 8])
        return bits[a - 8 * first: b - 8 * first]

    def changed_before(self, i: int) -> int:
        """Number of changed entries before entry i: one prefix count plus < 4096 bits."""
        chunk = i // self.CHUNK
        lead = int(self.changed(chunk * self.CHUNK, i).sum()) if i > chunk * self.CHUNK else 0
        return int(self.before[chunk]) + lead

    def write_over(self, row: "torch.Tensor", a: int, b: int) -> None:
        """row (float32, entries [a, b) of the base) gets this agent's changed values at their places."""
        # only this block's values are converted: converting values[start:] (every later value of the
        # tensor) made each block's work and temporary grow with the tensor (1.2 GB at a 7B embedding)
        values = self.values[self.changed_before(a):self.changed_before(b)]
        # masked_scatter_ takes the source's values in order, as many as the mask's set entries: no count
        # pass, and 1.3x faster than an index_put with a boolean mask (measured, CPU)
        row.masked_scatter_(self.changed(a, b), values.to(row.dtype))


def pack_bits(mask: "torch.Tensor") -> "torch.Tensor":
    import torch

    padded = torch.nn.functional.pad(mask.to(torch.uint8), (0, -mask.numel() % 8)).view(-1, 8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=mask.device)
    return (padded * weights).sum(1, dtype=torch.uint8)


_UNPACK: dict = {}  # device -> (256, 8) bool table: bits of each byte value


def unpack_bits(packed: "torch.Tensor") -> "torch.Tensor":
    """Bool entries of packed bytes (a table lookup per byte: faster than shifting each bit)."""
    import torch

    table = _UNPACK.get(packed.device)
    if table is None:
        byte = torch.arange(256, dtype=torch.uint8, device=packed.device).unsqueeze(1)
        table = _UNPACK[packed.device] = byte.bitwise_right_shift(
            torch.arange(8, dtype=torch.uint8, device=packed.device)).bitwise_and_(1).bool()
    return table[packed.long()].view(-1)


class CompactStore(InputStore):
    """The base in its stored dtype on the device, each agent as a CompactDelta against it."""

    def __init__(self, device: "torch.device"):
        self.device = device
        self.base: dict[str, torch.Tensor] = {}
        self.models: dict[str, list[CompactDelta]] = {}

    def load(self, inputs, name):
        import torch

        weights = [inputs.read(m, name, self.device).reshape(-1) for m in inputs.models]
        # without a base the operands are zeros and the weights: deltas against zeros, as the disk path
        base = (inputs.read(inputs.base, name, self.device).reshape(-1) if inputs.base is not None
                else torch.zeros_like(weights[0]))
        self.base[name] = base
        self.models[name] = [CompactDelta(base, w) for w in weights]

    def fill(self, name, span, rows):
        a, b = span
        base = self.base[name][a:b]
        rows[0].copy_(base)
        for row, delta in zip(rows[1:], self.models[name]):
            row.copy_(base)
            delta.write_over(row, a, b)

    def private_bytes(self):
        return (sum(tensor_nbytes(t) for t in self.base.values())
                + sum(d.nbytes() for ds in self.models.values() for d in ds))
