"""The streaming reader and writer against the safetensors library itself."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from packager.errors import CorruptFileError
from packager.io.reader import SafetensorsShard
from packager.io.writer import OutputTensor, ShardedWriter, assign_shards

TENSORS = {
    "a.weight": torch.randn(7, 5),
    "b.weight": torch.randn(3, 4).to(torch.bfloat16),
    "c.bias": torch.randn(9).to(torch.float16),
    "d.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    "e.scalar": torch.tensor(2.5),
}


@pytest.mark.parametrize("threaded", [False, True])
def test_reader_yields_library_tensors_and_file_sha256(threaded, tmp_path) -> None:
    """Yielded tensors live in two reused buffers: valid until the one after next is requested (so: clone)."""
    from packager.io.pipeline import Pipeline

    path = str(tmp_path / "x.safetensors")
    save_file(TENSORS, path, metadata={"format": "pt"})
    shard = SafetensorsShard(path)
    with Pipeline() as pipeline:
        read = {name: tensor.clone() for name, tensor in shard.iter_tensors(pipeline if threaded else None)}
    assert read.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor)
    assert shard.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert torch.equal(shard.read("b.weight"), TENSORS["b.weight"])


@pytest.mark.parametrize(("threaded", "direct_io"), [(False, False), (True, True), (True, False)])
def test_writer_output_loads_with_the_library(threaded, direct_io, tmp_path) -> None:
    from packager.io.pipeline import InlinePipeline, Pipeline

    layout = [
        OutputTensor(
            n,
            {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}[t.dtype],
            tuple(t.shape),
        )
        for n, t in TENSORS.items()
    ]
    shards = assign_shards(layout, max_shard_bytes=150)
    assert len(shards) > 1
    with Pipeline() if threaded else InlinePipeline() as pipeline:
        writer = ShardedWriter(str(tmp_path), shards, pipeline, direct_io=direct_io)
        for name, tensor in TENSORS.items():
            writer.write(name, tensor)
        writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    loaded = {}
    for shard_name in sorted(set(index["weight_map"].values())):
        loaded.update(load_file(str(tmp_path / shard_name)))
        digest = hashlib.sha256((tmp_path / shard_name).read_bytes()).hexdigest()
        assert writer.sha256[shard_name] == digest
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor) and index["weight_map"][name].startswith("model-0000")


def test_writer_rejects_a_tensor_out_of_plan(tmp_path) -> None:
    writer = ShardedWriter(str(tmp_path), [[OutputTensor("a", "F32", (2,))]])
    with pytest.raises(RuntimeError, match="expected"):
        writer.write("a", torch.zeros(3))


def test_writer_raises_what_failed_on_the_io_lane(tmp_path) -> None:
    from packager.io.pipeline import Pipeline

    layout = [OutputTensor("a", "F32", (2,)), OutputTensor("b", "F32", (2,))]
    with Pipeline() as pipeline:
        writer = ShardedWriter(str(tmp_path / "gone"), [layout], pipeline)
        with pytest.raises(FileNotFoundError):
            writer.write("a", torch.ones(2))
            writer.write("b", torch.ones(2))
            writer.close()


def test_single_shard_is_named_model_safetensors(tmp_path) -> None:
    writer = ShardedWriter(str(tmp_path), assign_shards([OutputTensor("a", "F32", (2,))], 10**9))
    writer.write("a", torch.ones(2))
    writer.close()
    assert os.listdir(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize("damage", ["short", "huge-header", "bad-json", "bad-offsets", "truncated"])
def test_corrupt_files_are_named(damage, tmp_path) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.ones(4, 4)}, str(path))
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if damage == "short":
        data = data[:5]
    elif damage == "huge-header":
        data = struct.pack("<Q", 10**12) + data[8:]
    elif damage == "bad-json":
        data = data[:8] + b"{" * n + data[8 + n :]
    elif damage == "bad-offsets":
        header["a"]["data_offsets"] = [0, 8]
        body = json.dumps(header).encode().ljust(n)
        data = data[:8] + body[:n] + data[8 + n :]
    else:
        data = data[:-4]
    path.write_bytes(data)
    with pytest.raises(CorruptFileError, match=r"x\.safetensors is not a valid safetensors file"):
        SafetensorsShard(str(path))
