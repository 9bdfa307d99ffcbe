"""The safetensors format as evomerge reads and writes it: file names, dtype tags, header parsing.

A safetensors file is an 8-byte little-endian header length, a JSON header ({name: dtype, shape,
data_offsets}), then the raw tensor bytes. `read_safetensors_header` checks every entry against the
file's real size, so a truncated or corrupt file is reported, naming the file, before anything is merged.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from evomerge.errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

# safetensors dtype tag -> (torch dtype name, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16"}
# The dtypes a merge writes, spelled once: recipes, experiments, the CLI's --dtype and the engine's check
OutputDType = Literal["float32", "float16", "bfloat16"]
OUTPUT_DTYPES: tuple[str, ...] = get_args(OutputDType)
TAG_OF = {name: tag for tag, (name, _) in SAFETENSORS_DTYPES.items()}


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
    _check_layout(file, tensors, 8 + n, data_size)
    return tensors, raw


def _check_layout(file: Path, tensors: dict[str, TensorInfo], data_start: int, data_size: int) -> None:
    """The tensors tile the data section exactly, as the safetensors library requires (its Rust
    `Metadata::validate` + `MetadataIncompleteBuffer`): sorted by offset, each starts where the previous
    ended, the first at 0, the last at the end of the file. Two tensors sharing bytes would make a merge
    read one tensor's bytes as another's; a hole or trailing bytes mean the file is not what it says."""
    expected, previous = 0, None
    for info in sorted(tensors.values(), key=lambda t: (t.offset, t.offset + t.nbytes)):
        start = info.offset - data_start
        if start < expected:
            raise CheckpointError(
                f"{file}: corrupt safetensors file (tensor '{info.name}' at bytes {start}..{start + info.nbytes} "
                f"overlaps tensor '{previous}', which ends at byte {expected}); the safetensors library refuses it"
            )
        if start > expected:
            raise CheckpointError(
                f"{file}: corrupt safetensors file (bytes {expected}..{start} of the data section belong to no "
                f"tensor, before tensor '{info.name}'); the safetensors library refuses it"
            )
        expected, previous = start + info.nbytes, info.name
    if expected != data_size:
        raise CheckpointError(
            f"{file}: corrupt safetensors file (the tensors cover {expected} bytes but the data section has "
            f"{data_size}: {data_size - expected} trailing byte(s)); the safetensors library refuses it"
        )




def require_little_endian() -> None:
    """Tensor bytes are reinterpreted in place, so they must be in the machine's byte order."""
    if sys.byteorder != "little":
        raise CheckpointError("reading safetensors (little-endian) on a big-endian machine is not supported")
