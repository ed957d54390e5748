"""Read a safetensors shard tensor by tensor, in file order, hashing every byte on the way.

Tensors are read into two reusable buffers (no fresh allocation, so no page faults per tensor): a yielded
tensor is valid until the consumer asks for the one after next, by which time it has been written and hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import torch

from packager.io.pipeline import BufferRing, InlinePipeline, Pipeline
from packager.io.safetensors_format import TensorInfo, read_header

CHUNK = 64 << 20


class SafetensorsShard:
    """One safetensors file: its tensors, read one at a time into private memory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self.tensors, self.metadata, self.header_len = read_header(path, self.size)
        self.sha256: str | None = None

    def iter_tensors(
        self, pipeline: Pipeline | None = None, hash_bytes: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield every tensor in offset order; afterwards `sha256` holds the file's digest (with `hash_bytes`:
        pass False when the digest is known already)."""
        pipeline = pipeline or InlinePipeline()
        digest = hashlib.sha256() if hash_bytes else _NoDigest()
        ordered = sorted(self.tensors.values(), key=lambda t: t.start)
        largest = max((t.nbytes for t in ordered), default=0)
        buffers = BufferRing(pipeline, count=2 if len(ordered) > 1 else 1, reserve=largest)
        with open(self.path, "rb", buffering=0) as f:
            pipeline.submit(digest.update, _read_exact(f, self.header_len))
            position = self.header_len
            for info in ordered:
                if info.start > position:  # padding between tensors still belongs to the file
                    pipeline.submit(digest.update, _read_exact(f, info.start - position))
                tensor = _read_tensor(f, info, buffers.take(info.nbytes))  # waits until read two steps ago is done
                pipeline.submit(digest.update, memoryview(tensor.view(-1).view(torch.uint8).numpy()))
                position = info.end
                yield info.name, tensor
                buffers.release()
            for block in iter(lambda: f.read(CHUNK), b""):
                pipeline.submit(digest.update, block)
        pipeline.fence().result()
        self.sha256 = digest.hexdigest() if hash_bytes else None

    def read(self, name: str) -> torch.Tensor:
        """Read a single tensor by name (random access, no hashing)."""
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.tensors[name].start)
            return _read_tensor(f, self.tensors[name])


class _NoDigest:
    def update(self, data: object) -> None:
        """Discard the data (stands in for a hash when hashing is off)."""
        pass


def _read_tensor(f, info: TensorInfo, buffer: torch.Tensor | None = None) -> torch.Tensor:
    buffer = torch.empty(info.nbytes, dtype=torch.uint8) if buffer is None else buffer[: info.nbytes]
    view = memoryview(buffer.numpy())
    done = 0
    while done < info.nbytes:
        n = f.readinto(view[done:])
        if not n:
            raise EOFError(f"{f.name}: unexpected end of file")
        done += n
    return buffer.view(info.torch_dtype).reshape(info.shape)


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"{f.name}: unexpected end of file")
    return data


class PickleShard:
    """A pickle weights file, loaded with weights_only=True (only used when the user allowed pickle)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self.sha256: str | None = None

    def iter_tensors(
        self, pipeline: Pipeline | None = None, hash_bytes: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield every tensor of the loaded state; afterwards `sha256` holds the file's digest (with `hash_bytes`)."""
        from packager.io.hashing import sha256_file
        from packager.io.pickle_state import load_pickle_state

        yield from load_pickle_state(self.path).items()
        self.sha256 = sha256_file(self.path) if hash_bytes else None


def open_shard(path: str, weights_format: str) -> SafetensorsShard | PickleShard:
    """A reader for one weights file: PickleShard for the pickle format, else SafetensorsShard."""
    return PickleShard(path) if weights_format == "pickle" else SafetensorsShard(path)
