"""Pinning a base's files: at plan time only what is known without reading a byte (a digest remembered from an
earlier run, or a Hugging Face blob's name), so a dry run of any size answers in seconds; the run that writes the
lock hashes the rest, several files at once, and samples each weight file for the start-up check."""

from __future__ import annotations

import os

from packager.io.hashing import known_sha256, sha256_files
from packager.model_files import is_weight_file
from packager.plan import BaseSpec, FileEntry
from packager.runtime.fingerprint import sample_sha256


def known_base(base: BaseSpec) -> BaseSpec:
    """The base with every sha256 that is known without reading the file (the others stay None)."""
    files = tuple(FileEntry(e.path, e.size, e.sha256 or known_sha256(os.path.join(base.path, e.path)), e.sample_sha256)
                  for e in base.files)  # fmt: skip
    return BaseSpec(**{**base.__dict__, "files": files})


def sampled_base(base: BaseSpec) -> BaseSpec:
    """Every base file's sha256 (the missing ones hashed in parallel) and each weight file's sampled fingerprint:
    what the lock pins and the image's start-up check compares (quickly by sample for weights, in full for the
    small files). Files pinned elsewhere (a pushed base image's, which this folder may not hold) keep their pins."""
    missing = [e.path for e in base.files if not e.sha256]
    digests = dict(zip(missing, sha256_files([os.path.join(base.path, p) for p in missing]), strict=True))
    files = tuple(
        FileEntry(e.path, e.size, e.sha256 or digests[e.path], e.sample_sha256 or _sample(base.path, e))
        for e in base.files
    )
    return BaseSpec(**{**base.__dict__, "files": files})


def _sample(folder: str, entry: FileEntry) -> str | None:
    """A weight file's sample, when this folder holds that file (a pinned image's file of another size is not it)."""
    path = os.path.join(folder, entry.path)
    if not is_weight_file(entry.path) or not os.path.isfile(path) or os.path.getsize(path) != entry.size:
        return None
    return sample_sha256(path)


def pinned_files(folder: str) -> tuple[FileEntry, ...]:
    """The files of a model folder a step made (a quantized base), each pinned as a base's are: sha256, and a
    sample of each weight file (what the lock records and the image's start-up check compares)."""
    from packager.resolve.resolver import resolve_base

    return sampled_base(resolve_base(folder)).files


def unpinned(base: BaseSpec) -> int:
    """How many of the base's files are not pinned yet."""
    return sum(1 for e in base.files if not e.sha256)
