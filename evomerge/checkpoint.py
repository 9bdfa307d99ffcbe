"""Hugging Face checkpoint directories: lazy per-tensor reads, validation, an atomic sharded writer.

Reading: `Checkpoint.open(dir)` parses config.json and every safetensors header (single file or
sharded with model.safetensors.index.json) without loading any weight; `CheckpointSet` checks that
a base and its models agree (architecture, tensor names, shapes) and reads one tensor at a time.
`copy_into` (the merge's path on a CPU) maps only that tensor's bytes, converts them into the
caller's reused float32 row and unmaps them at once: no intermediate buffer, and mapped pages count
in the RSS for one tensor only (a whole-file map would show every input's size). Measured on a
49 MB bf16 tensor already in the page cache: 24 ms map + convert vs 40 ms pread into a buffer +
convert. `read` (a positioned read, pread, into a new or reused buffer) serves everything else,
e.g. the pinned staging buffer of a GPU merge.

Writing: `staged_output_dir` gives a temporary sibling of the output that is renamed into place
only when everything succeeded; `ShardPlan` lays the output tensors out in shards up front (names,
shapes and dtype are known before merging), so `ShardWriter` streams each merged tensor straight
into its file: no shard is ever buffered in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Mapping, Sequence

from evomerge.errors import CheckpointError
from evomerge.staging import staged_output_dir  # noqa: F401  (writers import it from here)

if TYPE_CHECKING:  # torch is imported lazily so `import evomerge.checkpoint` stays cheap
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
# Files copied verbatim from the base into a merged checkpoint (tokenizer, chat template, generation).
SIDE_FILE_PATTERNS = (
    "tokenizer*", "vocab.*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "chat_template*", "generation_config.json", "*.tiktoken", "spiece.model",
)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

# safetensors dtype tag -> (torch dtype name, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16"}
_TAG_OF = {name: tag for tag, (name, _) in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, from the safetensors header."""

    name: str
    file: Path
    dtype: str  # torch dtype name, e.g. 'bfloat16'
    shape: tuple[int, ...]
    offset: int = 0  # absolute byte offset of the data in `file`
    nbytes: int = 0

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(file: Path) -> tuple[dict[str, TensorInfo], bytes]:
    """Parse and sanity-check a safetensors header; return ({name: info}, raw header bytes).

    Catches truncated and corrupt files with a message naming the file before anything is merged
    (the safetensors library would fail later, mid-merge, with a less helpful message).
    """
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{file}: corrupt safetensors file (only {size} bytes, no header)")
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{file}: corrupt safetensors file (header claims {n} bytes, file has {size}); "
                    "re-download or re-save it"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt safetensors file (header is not valid JSON: {exc})") from None
    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            tag, shape, (start, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
            dtype, itemsize = SAFETENSORS_DTYPES[tag]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{file}: corrupt safetensors file (bad header entry for tensor '{name}': {entry!r})"
            ) from None
        offsets_ok = isinstance(start, int) and isinstance(end, int) and 0 <= start
        if not offsets_ok or end - start != math.prod(shape) * itemsize:
            raise CheckpointError(
                f"{file}: corrupt safetensors file (tensor '{name}': offsets {start}..{end} do not fit "
                f"shape {list(shape)} of {tag})"
            )
        if end > data_size:
            raise CheckpointError(
                f"{file}: corrupt or truncated safetensors file (tensor '{name}' ends at byte {end} "
                f"but the data section has {data_size} bytes)"
            )
        tensors[name] = TensorInfo(name, file, dtype, shape, 8 + n + start, end - start)
    return tensors, raw


@dataclass(frozen=True)
class Checkpoint:
    """A Hugging Face checkpoint directory, opened without reading any weight."""

    path: Path
    config: Mapping[str, Any]
    tensors: Mapping[str, TensorInfo]  # in file order
    files: tuple[Path, ...]  # weight files
    fingerprint: str  # cheap content fingerprint, for provenance and statistics caching

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        root = Path(path).expanduser()
        if not root.is_dir():
            raise CheckpointError(f"{root}: checkpoint directory not found")
        config_file = root / CONFIG_FILE
        try:
            config = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{config_file}: missing; a Hugging Face checkpoint needs a config.json") from None
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"{config_file}: cannot read it as JSON ({exc})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_file}: expected a JSON object")

        files, expected = _weight_files(root)
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
        return cls(root, config, tensors, tuple(files), digest.hexdigest()[:16])

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


def _weight_files(root: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files of a checkpoint and, when sharded, the index's tensor -> file map."""
    index = root / INDEX_FILE
    if index.is_file():
        try:
            data = json.loads(index.read_text())
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map must map tensor names to file names")
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        real_root = root.resolve()
        expected: dict[str, Path] = {}
        files: list[Path] = []
        for name, rel in weight_map.items():
            shard = root / rel
            # an index must not make us read (or mmap) files outside the checkpoint directory
            if Path(rel).is_absolute() or not shard.resolve().is_relative_to(real_root):
                raise CheckpointError(
                    f"{index}: shard path {rel!r} of tensor '{name}' points outside the checkpoint directory; "
                    "refusing it"
                )
            if not shard.is_file():
                raise CheckpointError(f"{index}: shard file {rel!r} (tensor '{name}') does not exist")
            if shard not in files:
                files.append(shard)
            expected[name] = shard
        return files, expected
    single = root / SINGLE_FILE
    if single.is_file():
        return [single], None
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


def _require_little_endian() -> None:
    """Tensor bytes are reinterpreted in place, so they must be in the machine's byte order."""
    if sys.byteorder != "little":
        raise CheckpointError("reading safetensors (little-endian) on a big-endian machine is not supported")


class CheckpointSet:
    """A base (optional) and the models to merge, checked against each other; lazy tensor reads.

    Use as a context manager (or call `close`) to close the weight files.
    """

    def __init__(self, base: Checkpoint | None, models: Sequence[Checkpoint]):
        self.base = base
        self.models = list(models)
        self.reference = base if base is not None else self.models[0]
        self._fds: dict[Path, int] = {}

    @classmethod
    def open(cls, base: str | Path | None, models: Sequence[str | Path]) -> "CheckpointSet":
        opened = cls(Checkpoint.open(base) if base is not None else None, [Checkpoint.open(m) for m in models])
        opened.validate()
        return opened

    @property
    def all(self) -> list[Checkpoint]:
        return ([self.base] if self.base is not None else []) + self.models

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
        out: "torch.Tensor | None" = None,
    ) -> "torch.Tensor":
        """One tensor, read from disk into `out` (a contiguous byte buffer with room for it, reused by
        the caller) or into a new tensor; checked to be finite unless `finite=False` (for callers that
        check a float32 copy instead: a bf16 reduction is slow on CPUs without bf16 units)."""
        import torch

        info = ckpt.tensors[name]
        dtype = getattr(torch, info.dtype)
        if out is None:
            target = torch.empty(info.nbytes, dtype=torch.uint8)
        else:
            if out.dtype != torch.uint8 or out.device.type != "cpu" or out.numel() < info.nbytes:
                raise ValueError(f"read: out must be a CPU uint8 buffer of at least {info.nbytes} bytes")
            target = out[: info.nbytes]
        self._pread(info, target)
        tensor = target.view(dtype).view(info.shape)
        if str(device) != "cpu":
            tensor = tensor.to(device)
        if finite and tensor.is_floating_point():
            check_finite(tensor, info.file, name)
        return tensor

    def copy_into(self, ckpt: Checkpoint, name: str, out: "torch.Tensor") -> None:
        """Copy one tensor into `out` (a contiguous CPU tensor with as many entries, any dtype: the copy
        converts, e.g. bf16 -> float32) straight from a memory map of the tensor's bytes, unmapped
        afterwards. No intermediate buffer: the conversion reads the page cache, one pass fewer than a
        read into a buffer (and its memory) followed by the conversion. Not checked for finiteness."""
        import mmap

        import torch

        info = ckpt.tensors[name]
        if out.device.type != "cpu" or not out.is_contiguous() or out.numel() != info.numel:
            raise ValueError(f"copy_into: out must be a contiguous CPU tensor of {info.numel} entries")
        _require_little_endian()
        if info.nbytes == 0:
            return
        try:
            fd = self._fd(info.file)
            # a page past the end of a mapped file is a SIGBUS, not an exception: check the size first
            if os.fstat(fd).st_size < info.offset + info.nbytes:
                raise CheckpointError(f"{info.file}: file ended inside tensor '{info.name}' (truncated while in use?)")
            start = info.offset - info.offset % mmap.ALLOCATIONGRANULARITY
            # private and writable (never written): shares the page cache, and torch accepts the buffer
            with mmap.mmap(fd, info.offset + info.nbytes - start, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start) as mapped:
                raw = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=info.offset - start)
                out.view(-1).copy_(raw.view(getattr(torch, info.dtype)))
                del raw  # the map cannot close while a tensor still points into it
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor '{info.name}' ({exc.strerror or exc})") from None

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def _pread(self, info: TensorInfo, target: "torch.Tensor") -> None:
        _require_little_endian()
        try:
            fd = self._fd(info.file)
            view = memoryview(target.numpy()).cast("B")
            done = 0
            while done < info.nbytes:
                got = os.preadv(fd, [view[done:]], info.offset + done)
                if got <= 0:
                    raise CheckpointError(
                        f"{info.file}: file ended inside tensor '{info.name}' (truncated while in use?)"
                    )
                done += got
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor '{info.name}' ({exc.strerror or exc})") from None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "CheckpointSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_finite(tensor: "torch.Tensor", file: Path | str, name: str) -> None:
    """Raise CheckpointError naming the file and tensor when `tensor` holds a NaN or an infinity."""
    import torch

    if tensor.numel() == 0:
        return
    if tensor.dtype in (torch.bfloat16, torch.float16):
        # all-ones exponent bits mean inf/NaN; integer ops are vectorized where bf16 arithmetic is not
        mask = 0x7F80 if tensor.dtype == torch.bfloat16 else 0x7C00
        bad = int(tensor.reshape(-1).view(torch.int16).bitwise_and(mask).max()) == mask
    elif tensor.dtype in (torch.float32, torch.float64):
        # a sum is finite iff every entry is, unless it overflows: only then look element-wise
        bad = not torch.isfinite(tensor.sum()) and not bool(torch.isfinite(tensor).all())
    else:
        bad = not bool(torch.isfinite(tensor.float()).all())
    if bad:
        count = int((~torch.isfinite(tensor.float())).sum())
        raise CheckpointError(f"{file}: tensor '{name}' has {count} NaN/inf value(s); the checkpoint is broken")


def _arch(ckpt: Checkpoint) -> str:
    model_type, archs = ckpt.architecture
    return f"{'/'.join(archs) or '?'} (model_type {model_type})"


# -- writing ------------------------------------------------------------------------------------


def parse_size(size: str | int) -> int:
    """'5GB' -> 5e9 bytes, '500MiB' -> 500 * 2**20, 1000 -> 1000 (Hugging Face's convention)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), flags=re.IGNORECASE)
        if not m:
            raise CheckpointError(f"shard size {size!r}: use a byte count or a size like '5GB', '500MB', '2GiB'")
        unit = (m.group(2) or "B").upper()
        scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
        value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise CheckpointError(f"shard size {size!r} must be positive")
    return value


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * SAFETENSORS_DTYPES[_TAG_OF[self.dtype]][1]


@dataclass(frozen=True)
class ShardPlan:
    """Which tensor goes in which file, fixed before the merge starts."""

    shards: tuple[tuple[PlannedTensor, ...], ...]

    @classmethod
    def build(cls, tensors: Sequence[PlannedTensor], max_shard_bytes: int) -> "ShardPlan":
        shards: list[list[PlannedTensor]] = [[]]
        used = 0
        for t in tensors:
            if shards[-1] and used + t.nbytes > max_shard_bytes:  # a tensor bigger than a shard gets its own
                shards.append([])
                used = 0
            shards[-1].append(t)
            used += t.nbytes
        return cls(tuple(tuple(s) for s in shards))

    def file_names(self) -> list[str]:
        n = len(self.shards)
        return [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

    @property
    def order(self) -> list[PlannedTensor]:
        return [t for shard in self.shards for t in shard]


WRITEBACK_BYTES = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range():
    """libc's sync_file_range (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def start_writeback(fd: int) -> None:
    """Ask Linux to start writing a file's dirty pages to disk now, without waiting (sync_file_range with
    SYNC_FILE_RANGE_WRITE; nothing elsewhere). Done as the output grows, the fsync before the final
    rename finds little left to write: it was 0.11-0.13 s of a 1.1 s merge of 262 MB of output."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file; a failure only costs time


class ShardWriter:
    """Streams tensors, in the plan's order, into the plan's files; writes the index at the end.

    Each file's header is written first (offsets are known from the plan), then each tensor's bytes
    as it arrives, so memory holds one tensor, never a shard.
    """

    def __init__(self, directory: Path, plan: ShardPlan):
        self.directory = directory
        self.plan = plan
        self._names = plan.file_names()
        self._queue: Iterator[tuple[int, PlannedTensor]] = iter(
            [(i, t) for i, shard in enumerate(plan.shards) for t in shard]
        )
        self._file: BinaryIO | None = None
        self._shard = -1
        self._unsynced = 0  # bytes written since the disk was last asked to start writing them

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        import torch

        try:
            shard, planned = next(self._queue)
        except StopIteration:
            raise RuntimeError(f"ShardWriter: tensor '{name}' is not in the plan") from None
        if (planned.name, tuple(tensor.shape), str(tensor.dtype)) != (name, planned.shape, f"torch.{planned.dtype}"):
            raise RuntimeError(
                f"ShardWriter: got '{name}' {tensor.dtype} {list(tensor.shape)}, the plan expects {planned}"
            )
        if shard != self._shard:
            self._open(shard)
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._unsynced += data.nbytes
        if self._unsynced >= WRITEBACK_BYTES:
            self._file.flush()
            start_writeback(self._file.fileno())
            self._unsynced = 0

    def _open(self, shard: int) -> None:
        self._close_file()
        self._shard = shard
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in self.plan.shards[shard]:
            header[t.name] = {
                "dtype": _TAG_OF[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self._file = open(self.directory / self._names[shard], "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def finish(self) -> list[str]:
        """Close the last file and write the index when there are several; return the file names."""
        if next(self._queue, None) is not None:
            raise RuntimeError("ShardWriter: finished before every planned tensor was written")
        self._close_file()
        if len(self._names) > 1:
            total = sum(t.nbytes for t in self.plan.order)
            weight_map = {t.name: self._names[i] for i, shard in enumerate(self.plan.shards) for t in shard}
            write_json(self.directory / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        return list(self._names)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def copy_side_files(source: Path, dest: Path) -> list[str]:
    """Copy tokenizer, chat template and generation files; return their names."""
    copied = []
    for pattern in SIDE_FILE_PATTERNS:
        for f in sorted(source.glob(pattern)):
            if f.is_file() and not (dest / f.name).exists():
                shutil.copy2(f, dest / f.name)
                copied.append(f.name)
    return copied
