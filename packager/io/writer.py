"""Write tensors into Hugging Face style safetensors shards as they arrive.

The layout (which tensor goes into which shard, with what shape and dtype) is known before the
first byte is written, so every shard's header is written up front and each tensor goes
straight to disk: memory does not grow with the shard size.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from packager.io.output_file import OutputFile
from packager.io.pipeline import InlinePipeline, Pipeline
from packager.io.safetensors_format import DTYPE_NAMES, element_size, encode_header

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class OutputTensor:
    """Name, dtype and shape of one tensor to write, known before its data is."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count * element_size(self.dtype)


def assign_shards(tensors: list[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Split tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor stands alone)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    """Hugging Face shard names: model.safetensors alone, else model-0000i-of-0000n.safetensors."""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


class ShardedWriter:
    """Receives tensors in layout order and streams them into their shard files.

    File writes run on the pipeline's io lane and hashing on its hash lane, so the caller's thread only merges;
    a tensor handed to `write` must stay unchanged until a later `pipeline.fence()` completes (the reader's
    buffers wait for that). An error on the io lane is raised by the next `write` or by `close`.
    """

    def __init__(
        self,
        directory: str,
        shards: list[list[OutputTensor]],
        pipeline: Pipeline | None = None,
        direct_io: bool = True,
    ) -> None:
        self.directory = directory
        self._direct_io = direct_io
        self._pipeline = pipeline or InlinePipeline()
        self.shards = shards
        self.names = shard_file_names(len(shards))
        self.sha256: dict[str, str] = {}
        self._queue = [(s, t) for s, shard in enumerate(shards) for t in shard]
        self._next = 0
        self._shard = -1
        self._digest = hashlib.sha256()
        self._file: OutputFile | None = None  # touched only on the io lane
        self._io_tasks: list[Future] = []

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Queue the next tensor of the layout for writing and hashing; one out of layout order is a RuntimeError."""
        self._raise_io_errors()
        shard_index, expected = self._queue[self._next]
        actual = (DTYPE_NAMES[tensor.dtype], tuple(tensor.shape))
        if name != expected.name or actual != (expected.dtype, expected.shape):
            raise RuntimeError(f"writer expected {expected}, got {name} {actual}")
        if shard_index != self._shard:
            self._open(shard_index)
        data = tensor.contiguous().view(-1).view(torch.uint8)
        self._io(self._write_data, data)
        self._pipeline.submit(self._digest.update, memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        """Finish the last shard and write the index when there are several."""
        if self._next != len(self._queue):
            raise RuntimeError(f"writer got {self._next} of {len(self._queue)} tensors")
        self._finish_shard()
        if len(self.shards) > 1:
            self._write_index()

    def _open(self, shard_index: int) -> None:
        self._finish_shard()
        self._shard = shard_index
        entries = [(t.name, t.dtype, t.shape) for t in self.shards[shard_index]]
        header = encode_header(entries, {"format": "pt"})
        self._io(self._open_file, os.path.join(self.directory, self.names[shard_index]), header)
        self._digest = hashlib.sha256(header)

    def _finish_shard(self) -> None:
        if self._shard < 0 or self.names[self._shard] in self.sha256:
            return
        self._io(self._close_file)
        self._pipeline.fence().result()
        self._raise_io_errors()
        self.sha256[self.names[self._shard]] = self._digest.hexdigest()

    def _io(self, fn, *args) -> None:
        self._io_tasks.append(self._pipeline.submit_io(fn, *args))

    def _raise_io_errors(self) -> None:
        done = [task for task in self._io_tasks if task.done()]
        self._io_tasks = [task for task in self._io_tasks if not task.done()]
        for task in done:
            task.result()

    # the io lane

    def _open_file(self, path: str, header: bytes) -> None:
        self._file = OutputFile(path, self._direct_io)
        self._file.write(torch.frombuffer(bytearray(header), dtype=torch.uint8))

    def _write_data(self, data: torch.Tensor) -> None:
        self._file.write(data)

    def _close_file(self) -> None:
        self._file.close()  # fsynced: durable before the staging folder is renamed into place
        self._file = None

    def _write_index(self) -> None:
        weight_map = {t.name: self.names[s] for s, shard in enumerate(self.shards) for t in shard}
        total = sum(t.nbytes for shard in self.shards for t in shard)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(self.directory, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
