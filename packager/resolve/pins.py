"""Pinning a base's files: at plan time only what is known without reading a byte (a digest remembered from an
earlier run, or a Hugging Face blob's name), so a dry run of any size answers in seconds; the run that writes the
lock hashes the rest, several files at once, and samples each weight file for the start-up check."""

from __future__ import annotations

import os

from packager.io.hashing import known_sha256, sha256_files
from packager.plan import BaseSpec, FileEntry
from packager.runtime.fingerprint import sample_sha256


def known_base(base: BaseSpec) -> BaseSpec:
    """The base with every sha256 that is known without reading the file (the others stay None)."""
    files = tuple(FileEntry(e.path, e.size, e.sha256 or known_sha256(os.path.join(base.path, e.path)), e.sample_sha256)
                  for e in base.files)  # fmt: skip
    return BaseSpec(**{**base.__dict__, "files": files})


def sampled_base(base: BaseSpec) -> BaseSpec:
    """Every base file's sha256 (the missing ones hashed in parallel) and sampled fingerprint: what the lock pins
    and the image's start-up check compares."""
    missing = [e.path for e in base.files if not e.sha256]
    digests = dict(zip(missing, sha256_files([os.path.join(base.path, p) for p in missing]), strict=True))
    files = tuple(
        FileEntry(e.path, e.size, e.sha256 or digests[e.path], e.sample_sha256 or _sample(base.path, e.path))
        for e in base.files
    )
    return BaseSpec(**{**base.__dict__, "files": files})


def _sample(folder: str, name: str) -> str:
    return sample_sha256(os.path.join(folder, name))


def unpinned(base: BaseSpec) -> int:
    """How many of the base's files are not pinned yet."""
    return sum(1 for e in base.files if not e.sha256)
