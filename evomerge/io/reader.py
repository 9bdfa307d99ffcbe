"""The only checkpoint reader: Hugging Face checkpoint directories, opened lazily, validated, read per tensor.

`Checkpoint.open(dir)` parses config.json and every safetensors header (single file or sharded with
model.safetensors.index.json) without loading any weight; `CheckpointSet` checks that a base and its
models agree (architecture, tensor names, shapes) and reads one tensor at a time.
`copy_into` (the merge's path on a CPU) maps only that tensor's bytes, converts them into the
caller's reused float32 row and drops the copied pages from the map: no intermediate buffer, and
mapped pages count in the RSS for one block only (a whole-file map would show every input's size). Measured on a
49 MB bf16 tensor already in the page cache: 24 ms map + convert vs 40 ms pread into a buffer +
convert. `read` (a positioned read, pread, into a new or reused buffer) serves everything else,
e.g. the pinned staging buffer of a GPU merge. Every read is checked for byte order, truncation
and (unless the caller checks a float32 copy itself) NaN/inf.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from evomerge.errors import CheckpointError
from evomerge.io.hub import HubOrigin, resolve_checkpoint
from evomerge.io.input_files import check_input_file, side_files
from evomerge.io.safetensors_format import (
    CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TensorInfo, read_safetensors_header, require_little_endian,
)

if TYPE_CHECKING:  # torch is imported lazily so `import evomerge.io.reader` stays cheap
    import torch


@dataclass(frozen=True)
class Checkpoint:
    """A Hugging Face checkpoint directory, opened without reading any weight."""

    path: Path
    config: Mapping[str, Any]
    tensors: Mapping[str, TensorInfo]  # in file order
    files: tuple[Path, ...]  # weight files
    fingerprint: str  # cheap content fingerprint, for provenance and statistics caching
    origin: HubOrigin | None = None  # the Hub repo and commit, for a snapshot of the Hugging Face cache

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        """A checkpoint directory, or a Hub id `org/name[@revision]` (evomerge.io.hub: a local directory
        of that name wins; a Hub id is downloaded, or read from the Hugging Face cache when offline)."""
        resolved = resolve_checkpoint(path)
        root = resolved.path
        config = read_config(root)
        config_file = root / CONFIG_FILE
        files, expected = _weight_files(root)
        side_files(root)  # a side file linking outside the checkpoint is refused now, before any output exists
        tensors: dict[str, TensorInfo] = {}
        digest = hashlib.sha256(config_file.read_bytes())
        for file in files:
            found, raw = read_safetensors_header(file)
            digest.update(raw)
            digest.update(_sampled_content(file, 8 + len(raw)))
            for name, info in found.items():
                if expected is not None and expected.get(name) != file:
                    continue  # the index is the source of truth; stray entries are ignored, like HF does
                tensors[name] = info
        if expected is not None:
            missing = sorted(set(expected) - set(tensors))
            if missing:
                raise CheckpointError(
                    f"{root / INDEX_FILE}: tensor '{missing[0]}' is listed in {expected[missing[0]].name} "
                    f"but that file does not contain it ({len(missing)} such tensor(s))"
                )
        if not tensors:
            raise CheckpointError(f"{root}: the checkpoint contains no tensors")
        return cls(root, config, tensors, tuple(files), digest.hexdigest()[:16], resolved.origin)

    @property
    def architecture(self) -> tuple[str, tuple[str, ...]]:
        return str(self.config.get("model_type")), tuple(self.config.get("architectures") or ())

    @property
    def dtype(self) -> str:
        """The dtype most floating tensors are stored in (the config's word is not trusted)."""
        counts: dict[str, int] = {}
        for info in self.tensors.values():
            if info.is_float:
                counts[info.dtype] = counts.get(info.dtype, 0) + info.numel
        return max(counts, key=counts.get) if counts else "float32"


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json of the checkpoint directory at `path`, as a dict; errors name the file."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    config_file = root / CONFIG_FILE
    try:
        config = json.loads(check_input_file(root, config_file).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_file}: missing; a Hugging Face checkpoint needs a config.json") from None
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{config_file}: cannot read it as JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    return config


def _weight_files(root: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files of a checkpoint and, when sharded, the index's tensor -> file map."""
    index = root / INDEX_FILE
    if index.is_file():
        try:
            data = json.loads(check_input_file(root, index).read_text())
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map must map tensor names to file names")
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        expected: dict[str, Path] = {}
        files: list[Path] = []
        for name, rel in weight_map.items():
            shard = root / rel
            # an index must not make us read (or mmap) files outside the checkpoint directory
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise CheckpointError(
                    f"{index}: shard path {rel!r} of tensor '{name}' points outside the checkpoint directory; "
                    "refusing it"
                )
            if not shard.is_file():
                raise CheckpointError(f"{index}: shard file {rel!r} (tensor '{name}') does not exist")
            if shard not in files:
                files.append(check_input_file(root, shard))
            expected[name] = shard
        return files, expected
    single = root / SINGLE_FILE
    if single.is_file():
        return [check_input_file(root, single)], None
    if any(root.glob("*.bin")) or any(root.glob("*.pt")):
        raise CheckpointError(
            f"{root}: only safetensors checkpoints are read (found pickled .bin/.pt weights); "
            "re-save it with save_pretrained(..., safe_serialization=True)"
        )
    raise CheckpointError(f"{root}: no {SINGLE_FILE} or {INDEX_FILE} found")


def _sampled_content(file: Path, data_start: int, samples: int = 16, chunk: int = 65536) -> bytes:
    """Bytes at evenly spaced positions of the data section: a fingerprint that tells two
    fine-tunes with identical headers apart without hashing gigabytes."""
    size = file.stat().st_size
    span = max(size - data_start - chunk, 0)
    out = [size.to_bytes(8, "little")]
    with open(file, "rb") as fh:
        for i in range(samples):
            fh.seek(data_start + (span * i) // max(samples - 1, 1))
            out.append(fh.read(chunk))
    return b"".join(out)


PAGE_BYTES = mmap.PAGESIZE
MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)  # 4 on Linux and macOS


class CheckpointSet:
    """A base (optional) and the models to merge, checked against each other; lazy tensor reads.

    Use as a context manager (or call `close`) to close the weight files.
    """

    def __init__(self, base: Checkpoint | None, models: Sequence[Checkpoint]):
        self.base = base
        self.models = list(models)
        self.reference = base if base is not None else self.models[0]
        self._fds: dict[Path, int] = {}
        self._fds_lock = threading.Lock()
        # per (thread, file), the map of the tensor `copy_into` read last in that thread: (tensor name, map,
        # its bytes as a uint8 tensor, offset of the tensor's first byte in the map). Per thread: the
        # merge's block workers read different tensors of one file at the same time.
        self._maps: dict[tuple[int, Path], tuple[str, mmap.mmap, "torch.Tensor", int]] = {}

    @classmethod
    def open(cls, base: str | Path | None, models: Sequence[str | Path]) -> "CheckpointSet":
        opened = cls(Checkpoint.open(base) if base is not None else None, [Checkpoint.open(m) for m in models])
        opened.validate()
        return opened

    @property
    def all(self) -> list[Checkpoint]:
        return ([self.base] if self.base is not None else []) + self.models

    @property
    def fingerprint(self) -> tuple[str, ...]:
        """Identifies these inputs (e.g. as a statistics cache key): each checkpoint's content
        fingerprint, and whether a base is among them."""
        return tuple(c.fingerprint for c in self.all) + (f"base={self.base is not None}",)

    @property
    def tensor_names(self) -> list[str]:
        return list(self.reference.tensors)

    def validate(self) -> None:
        """Same architecture, tensor names and shapes everywhere; errors name the file and tensor."""
        ref = self.reference
        for ckpt in self.all:
            if ckpt is ref:
                continue
            if ckpt.architecture != ref.architecture:
                raise CheckpointError(
                    f"{ckpt.path / CONFIG_FILE}: architecture {_arch(ckpt)} differs from {_arch(ref)} in "
                    f"{ref.path / CONFIG_FILE}; only checkpoints of one architecture can be merged"
                )
            missing = [n for n in ref.tensors if n not in ckpt.tensors]
            if missing:
                raise CheckpointError(
                    f"{ckpt.path}: tensor '{missing[0]}' (present in {ref.path}) is missing"
                    + (f", and {len(missing) - 1} more" if len(missing) > 1 else "")
                )
            extra = [n for n in ckpt.tensors if n not in ref.tensors]
            if extra:
                raise CheckpointError(
                    f"{ckpt.path}: has tensor '{extra[0]}' that {ref.path} lacks"
                    + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                )
            for name, info in ref.tensors.items():
                other = ckpt.tensors[name]
                if other.shape != info.shape:
                    raise CheckpointError(
                        f"{other.file}: tensor '{name}' has shape {list(other.shape)} but {info.file} has "
                        f"{list(info.shape)}; the checkpoints are not fine-tunes of one model"
                    )
                if other.is_float != info.is_float:
                    raise CheckpointError(
                        f"{other.file}: tensor '{name}' is {other.dtype} but {info.file} has {info.dtype}"
                    )

    def read(
        self, ckpt: Checkpoint, name: str, device: "torch.device | str" = "cpu", finite: bool = True,
        out: "torch.Tensor | None" = None, span: tuple[int, int] | None = None,
    ) -> "torch.Tensor":
        """One tensor, read from disk into `out` (a contiguous byte buffer with room for it, reused by
        the caller) or into a new tensor; checked to be finite unless `finite=False` (for callers that
        check a float32 copy instead: a bf16 reduction is slow on CPUs without bf16 units).
        `span` = (a, b): only entries [a, b) of the flattened tensor, returned flat."""
        import torch

        info = ckpt.tensors[name]
        dtype = getattr(torch, info.dtype)
        first, stop = _checked_span(info, span)
        itemsize = info.nbytes // max(info.numel, 1)
        nbytes = (stop - first) * itemsize
        if out is None:
            target = torch.empty(nbytes, dtype=torch.uint8)
        else:
            if out.dtype != torch.uint8 or out.device.type != "cpu" or out.numel() < nbytes:
                raise ValueError(f"read: out must be a CPU uint8 buffer of at least {nbytes} bytes")
            target = out[:nbytes]
        self._pread(info, target, first * itemsize)
        tensor = target.view(dtype).view(info.shape if span is None else (stop - first,))
        if str(device) != "cpu":
            tensor = tensor.to(device)
        if finite and tensor.is_floating_point():
            check_finite(tensor, info.file, name)
        return tensor

    def copy_into(
        self, ckpt: Checkpoint, name: str, out: "torch.Tensor", span: tuple[int, int] | None = None,
    ) -> None:
        """Copy one tensor, or entries [a, b) of its flattened form (`span`, e.g. a block of rows), into
        `out` (a contiguous CPU tensor with as many entries, any dtype: the copy converts, e.g. bf16 ->
        float32) straight from a memory map of the tensor's bytes. No intermediate buffer: the conversion
        reads the page cache, one pass fewer than a read into a buffer (and its memory) followed by the
        conversion. The map stays open for the next span of the same tensor (a map and an unmap per block
        and operand cost ~20 % of the reads of the 0.5B fixture's row blocks, measured);
        the span's pages leave the map (MADV_DONTNEED) once copied, so mapped pages count in the RSS for
        one block only. Not checked for finiteness."""
        import torch

        info = ckpt.tensors[name]
        first, stop = _checked_span(info, span)
        if out.device.type != "cpu" or not out.is_contiguous() or out.numel() != stop - first:
            raise ValueError(f"copy_into: out must be a contiguous CPU tensor of {stop - first} entries")
        require_little_endian()
        itemsize = info.nbytes // max(info.numel, 1)
        nbytes = (stop - first) * itemsize
        if nbytes == 0:
            return
        try:
            fd = self._fd(info.file)
            # a page past the end of a mapped file is a SIGBUS, not an exception: check the size first
            if os.fstat(fd).st_size < info.offset + info.nbytes:
                raise CheckpointError(f"{info.file}: file ended inside tensor '{info.name}' (truncated while in use?)")
            mapped, raw, skip = self._tensor_map(fd, info)
            lo = skip + first * itemsize
            out.view(-1).copy_(raw[lo:lo + nbytes].view(getattr(torch, info.dtype)))
            # drop the span's whole pages from the map (unwritten private pages: the page cache keeps them)
            page_lo, page_hi = lo - lo % PAGE_BYTES, (lo + nbytes) - (lo + nbytes) % PAGE_BYTES
            if page_hi > page_lo:
                mapped.madvise(MADV_DONTNEED, page_lo, page_hi - page_lo)
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor '{info.name}' ({exc.strerror or exc})") from None

    def _tensor_map(self, fd: int, info: TensorInfo):
        """(map, its bytes as a uint8 tensor, offset of the tensor's first byte in it) of one tensor's bytes,
        kept until another tensor of the same file is read (or `close`)."""
        import torch

        key = (threading.get_ident(), info.file)
        cached = self._maps.get(key)
        if cached is not None and cached[0] == info.name:
            return cached[1], cached[2], cached[3]
        self._unmap(key)
        start = info.offset - info.offset % mmap.ALLOCATIONGRANULARITY
        # private and writable (never written): shares the page cache, and torch accepts the buffer
        mapped = mmap.mmap(fd, info.offset + info.nbytes - start, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
        raw = torch.frombuffer(mapped, dtype=torch.uint8)
        self._maps[key] = (info.name, mapped, raw, info.offset - start)
        return mapped, raw, info.offset - start

    def _unmap(self, key: tuple[int, Path]) -> None:
        cached = self._maps.pop(key, None)
        if cached is not None:
            _, mapped, raw, _ = cached
            del raw, cached  # the map cannot close while a tensor still points into it
            mapped.close()

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with self._fds_lock:  # two block workers must not both open (and one leak) the file
                fd = self._fds.get(file)
                if fd is None:
                    fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def _pread(self, info: TensorInfo, target: "torch.Tensor", skip: int = 0) -> None:
        """Fill `target` (bytes) from the tensor's data, starting `skip` bytes into it."""
        require_little_endian()
        try:
            fd = self._fd(info.file)
            view = memoryview(target.numpy()).cast("B")
            done = 0
            while done < len(view):
                got = os.preadv(fd, [view[done:]], info.offset + skip + done)
                if got <= 0:
                    raise CheckpointError(
                        f"{info.file}: file ended inside tensor '{info.name}' (truncated while in use?)"
                    )
                done += got
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor '{info.name}' ({exc.strerror or exc})") from None

    def close(self) -> None:
        for key in list(self._maps):
            self._unmap(key)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "CheckpointSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


FINITE_CHUNK = 1 << 22  # entries per temporary of the bf16/fp16 check (8 MiB of int16)


def all_finite(tensor: "torch.Tensor") -> bool:
    """No NaN and no infinity in `tensor` (a floating-point tensor); faster than `torch.isfinite(t).all()`
    (bf16 on one CPU thread: 5x)."""
    import torch

    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True  # integer tensors are finite
    if tensor.dtype in (torch.bfloat16, torch.float16):
        # all-ones exponent bits mean inf/NaN; integer ops are vectorized where bf16 arithmetic is not.
        # In chunks, into one reused buffer: a whole-tensor temporary (272 MB for the 0.5B embedding) per
        # tensor left 1.8-2.0 GiB of freed blocks in glibc's heaps after a worker loaded the 0.5B inputs
        mask = 0x7F80 if tensor.dtype == torch.bfloat16 else 0x7C00
        bits = tensor.reshape(-1).view(torch.int16)
        scratch = torch.empty(min(bits.numel(), FINITE_CHUNK), dtype=torch.int16, device=bits.device)
        for start in range(0, bits.numel(), FINITE_CHUNK):
            part = bits[start:start + FINITE_CHUNK]
            masked = torch.bitwise_and(part, mask, out=scratch[:part.numel()])
            if int(masked.max()) == mask:
                return False
        return True
    if tensor.dtype in (torch.float32, torch.float64):
        # a sum is finite iff every entry is, unless it overflows: only then look element-wise
        return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())
    return bool(torch.isfinite(tensor.float()).all())


def _checked_span(info: TensorInfo, span: tuple[int, int] | None) -> tuple[int, int]:
    """[first, stop) entries of a tensor's flattened form: the whole tensor for None."""
    if span is None:
        return 0, info.numel
    first, stop = span
    if not 0 <= first <= stop <= info.numel:
        raise ValueError(f"tensor '{info.name}' has {info.numel} entries; span {span} is outside it")
    return first, stop


def check_finite(tensor: "torch.Tensor", file: Path | str, name: str) -> None:
    """Raise CheckpointError naming the file and tensor when `tensor` holds a NaN or an infinity."""
    import torch

    if not all_finite(tensor):
        count = int((~torch.isfinite(tensor.float())).sum())
        raise CheckpointError(f"{file}: tensor '{name}' has {count} NaN/inf value(s); the checkpoint is broken")


def _arch(ckpt: Checkpoint) -> str:
    model_type, archs = ckpt.architecture
    return f"{'/'.join(archs) or '?'} (model_type {model_type})"



def iter_checkpoint_tensors(path: str | Path, device: "torch.device | str" = "cpu") -> Iterator[tuple[str, "torch.Tensor"]]:
    """(name, tensor) for every tensor of the checkpoint at `path`, in file order, each read on its own
    and checked like every merge input (byte order, truncation, NaN/inf, naming the file and tensor)."""
    with CheckpointSet.open(None, [path]) as inputs:
        ckpt = inputs.models[0]
        for name in ckpt.tensors:
            yield name, inputs.read(ckpt, name, device)
