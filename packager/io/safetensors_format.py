"""The safetensors file layout: an 8-byte little-endian header size, a JSON header, then raw data.

Reading and writing it directly (instead of `safe_open`, which memory-maps whole shards) keeps
resident memory at about one tensor whatever the shard size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch

from packager.errors import CorruptFileError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives inside a safetensors file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.start

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of the tensor's safetensors dtype."""
        return DTYPES[self.dtype]


def element_size(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name (e.g. BF16 -> 2)."""
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


def read_header(path: str, file_size: int) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Parse a safetensors header; return (tensors by name, metadata, header length in bytes)."""
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise _corrupt(path, "file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER_BYTES or 8 + n > file_size:
            raise _corrupt(path, f"header length {n} does not fit the file ({file_size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(path, f"header is not valid JSON ({exc.__class__.__name__})") from None
    metadata = header.pop("__metadata__", None) or {}
    tensors = {name: _tensor_info(path, name, entry, 8 + n) for name, entry in header.items()}
    data_end = max((t.end for t in tensors.values()), default=8 + n)
    if data_end > file_size:
        raise _corrupt(path, f"data ends at byte {data_end} but the file has {file_size} bytes (truncated?)")
    return tensors, metadata, 8 + n


def _tensor_info(path: str, name: str, entry: object, data_start: int) -> TensorInfo:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        raise _corrupt(path, f"tensor {name!r} has a malformed header entry") from None
    if dtype not in DTYPES:
        raise _corrupt(path, f"tensor {name!r} has unsupported dtype {dtype}")
    count = 1
    for dim in shape:
        count *= dim
    if end - begin != count * element_size(dtype) or begin < 0:
        raise _corrupt(path, f"tensor {name!r}: offsets do not match shape {shape} and dtype {dtype}")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


def encode_header(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    """Build the header bytes (length prefix included) for tensors laid out in the given order."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape in entries:
        count = 1
        for dim in shape:
            count *= dim
        size = count * element_size(dtype)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def _corrupt(path: str, why: str) -> CorruptFileError:
    return CorruptFileError(f"{path} is not a valid safetensors file: {why}; re-download or re-save the file")
