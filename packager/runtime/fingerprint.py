"""Content fingerprints of model files: a cheap sampled sha256 and the full sha256 (standard library only).

`sample_sha256(path)` is sha256 over, in this order, with N the file size in bytes:

1. N as 8 bytes little-endian;
2. the head: bytes [0, min(N, 1 MiB));
3. the tail: bytes [max(0, N - 1 MiB), N);
4. 64 blocks, for i = 0..63: bytes [o_i, min(N, o_i + 64 KiB)) with o_i = (i * max(0, N - 64 KiB)) // 63.

Parts are concatenated without separators (N fixes every length). It reads at most 6 MiB whatever the size,
and a file of at most 2 MiB is wholly covered by head and tail. The host (packager) and the image use this
same function, so the value in the lock and the value checked at start-up agree by construction.
"""

from __future__ import annotations

import hashlib
import os

MIB = 1 << 20
EDGE = MIB
BLOCK = 64 << 10
BLOCKS = 64


def sample_offsets(size: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges `sample_sha256` hashes, in order, for a file of `size` bytes."""
    ranges = [(0, min(size, EDGE)), (max(0, size - EDGE), min(size, EDGE))]
    span = max(0, size - BLOCK)
    for i in range(BLOCKS):
        offset = (i * span) // (BLOCKS - 1)
        ranges.append((offset, min(BLOCK, size - offset)))
    return ranges


def sample_sha256(path: str) -> str:
    """Sampled sha256 of a file (definition in the module docstring)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        for offset, length in sample_offsets(size):
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise OSError(f"{path} changed size while it was being fingerprinted")
            digest.update(data)
    return digest.hexdigest()


def full_sha256(path: str, chunk: int = 4 * MIB) -> str:
    """sha256 of the whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
