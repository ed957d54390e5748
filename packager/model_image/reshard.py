"""Split weight files above a registry's layer cap at tensor boundaries, so each layer of a base-model image fits.

A file in a tar layer cannot be split, and a file in parts is not a model anyone can load, so a safetensors file
above the cap is rewritten as several safetensors files (`<stem>-part-00001-of-00003.safetensors`), each holding
whole tensors in the source's order with their bytes copied unchanged, and the index (`model.safetensors.index
.json`) is rewritten or created to point at them: transformers and vLLM load the folder as any sharded model.
Every other file is hard-linked. The split base is a new set of pinned files; the record of the pushed image keeps
both, so a shared image of an adapter on the original base checks the mounted base against the split files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from packager.errors import UserInputError
from packager.image.context import link_or_copy
from packager.io.hashing import sha256_file
from packager.io.safetensors_format import TensorInfo, encode_header, read_header
from packager.io.staging import staged_directory
from packager.io.writer import INDEX_FILE as INDEX
from packager.model_files import is_weight_file
from packager.model_image.plan import human_size
from packager.plan import BaseSpec, FileEntry
from packager.runtime.fingerprint import sample_sha256

COPY_BYTES = 64 << 20


@dataclass(frozen=True)
class SplitPart:
    """One new file: its name, the tensors it holds (in the source's data order) and its exact size."""

    name: str
    tensors: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class SplitFile:
    """A weight file above the cap and the parts it becomes."""

    source: str
    parts: tuple[SplitPart, ...]


def plan_splits(base: BaseSpec, cap: int) -> tuple[SplitFile, ...]:
    """Which weight files exceed `cap` and how each splits (headers only); refuses what cannot split."""
    splits = []
    for entry in base.files:
        if not is_weight_file(entry.path) or entry.size <= cap:
            continue
        if not entry.path.endswith(".safetensors"):
            raise UserInputError(
                f"{entry.path} is {human_size(entry.size)}, above --max-layer-size, and only safetensors files can "
                "be split; convert the base to safetensors or raise --max-layer-size"
            )
        splits.append(_split_one(os.path.join(base.path, entry.path), entry.path, cap))
    return tuple(splits)


def _split_one(path: str, name: str, cap: int) -> SplitFile:
    tensors, metadata, _ = read_header(path, os.path.getsize(path))
    groups: list[list[TensorInfo]] = [[]]
    for tensor in sorted(tensors.values(), key=lambda t: t.start):
        if groups[-1] and _part_size([*groups[-1], tensor], metadata) > cap:
            groups.append([])
        groups[-1].append(tensor)
        if _part_size([tensor], metadata) > cap:
            raise UserInputError(
                f"tensor {tensor.name} of {name} alone is {human_size(tensor.nbytes)}, above --max-layer-size; "
                "raise --max-layer-size to what your registry accepts (a tensor cannot be split)"
            )
    stem, count = name.removesuffix(".safetensors"), len(groups)
    parts = tuple(
        SplitPart(f"{stem}-part-{i:05d}-of-{count:05d}.safetensors", tuple(t.name for t in g), _part_size(g, metadata))
        for i, g in enumerate(groups, start=1)
    )
    return SplitFile(name, parts)


def _part_size(tensors: list[TensorInfo], metadata: dict[str, str]) -> int:
    header = encode_header([(t.name, t.dtype, t.shape) for t in tensors], metadata)
    return len(header) + sum(t.nbytes for t in tensors)


def planned_base(base: BaseSpec, splits: tuple[SplitFile, ...]) -> BaseSpec:
    """The base as the image will hold it, before anything is written (a dry run): parts sized, not hashed."""
    return _planned(base, splits, _index_text(base, splits)) if splits else base


def _planned(base: BaseSpec, splits: tuple[SplitFile, ...], index: str) -> BaseSpec:
    sources = {s.source for s in splits}
    files = [f for f in base.files if f.path not in sources and f.path != INDEX]
    files += [FileEntry(p.name, p.size) for s in splits for p in s.parts]
    files.append(FileEntry(INDEX, len(index.encode())))
    return dataclasses.replace(base, files=tuple(sorted(files, key=lambda f: f.path)))


def write_split_base(base: BaseSpec, splits: tuple[SplitFile, ...], output: str) -> BaseSpec:
    """Write the split base to `output` (atomically) and pin its files: sha256 and the sampled fingerprint."""
    sources, index = {s.source for s in splits}, _index_text(base, splits)
    with staged_directory(output, force=True) as staging:
        for entry in base.files:
            if entry.path not in sources and entry.path != INDEX:
                target = os.path.join(staging, entry.path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                link_or_copy(os.path.realpath(os.path.join(base.path, entry.path)), target)
        for split in splits:
            _write_parts(os.path.join(base.path, split.source), split, staging)
        with open(os.path.join(staging, INDEX), "w") as f:
            f.write(index)
    files = tuple(_pinned(output, f.path) for f in _planned(base, splits, index).files)
    return dataclasses.replace(base, path=os.path.abspath(output), files=files)


def _write_parts(source: str, split: SplitFile, folder: str) -> None:
    tensors, metadata, _ = read_header(source, os.path.getsize(source))
    with open(source, "rb") as src:
        for part in split.parts:
            chosen = [tensors[name] for name in part.tensors]
            with open(os.path.join(folder, part.name), "wb") as out:
                out.write(encode_header([(t.name, t.dtype, t.shape) for t in chosen], metadata))
                for tensor in chosen:
                    src.seek(tensor.start)
                    left = tensor.nbytes
                    while left:
                        block = src.read(min(COPY_BYTES, left))
                        out.write(block)
                        left -= len(block)


def _index_text(base: BaseSpec, splits: tuple[SplitFile, ...]) -> str:
    """The original index with the split files' tensors pointed at their parts, or a new index."""
    path = os.path.join(base.path, INDEX)
    if os.path.isfile(path):
        with open(path) as f:
            index = json.load(f)
    else:
        index = _new_index(base)
    for split in splits:
        for part in split.parts:
            index["weight_map"].update(dict.fromkeys(part.tensors, part.name))
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def _new_index(base: BaseSpec) -> dict:
    """The index of an index-less base: every tensor by the file that holds it, and their total bytes."""
    weight_map: dict[str, str] = {}
    total = 0
    for entry in base.files:
        if entry.path.endswith(".safetensors"):
            full = os.path.join(base.path, entry.path)
            tensors = read_header(full, os.path.getsize(full))[0]
            weight_map.update(dict.fromkeys(tensors, entry.path))
            total += sum(t.nbytes for t in tensors.values())
    return {"metadata": {"total_size": total}, "weight_map": weight_map}


def _pinned(folder: str, name: str) -> FileEntry:
    path = os.path.join(folder, name)
    sample = sample_sha256(path) if is_weight_file(name) else None
    return FileEntry(name, os.path.getsize(path), sha256_file(path), sample)
