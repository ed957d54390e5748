"""Pins: what the lock records for a base's files, and where each sample comes from."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from packager.plan import FileEntry
from packager.resolve.pins import sampled_base, unpinned
from packager.resolve.resolver import resolve_base
from packager.runtime.fingerprint import sample_sha256


def test_every_file_is_hashed_and_only_weights_are_sampled(bases) -> None:
    base = resolve_base(bases["llama"])
    pinned = sampled_base(base)
    assert unpinned(pinned) == 0
    for entry in pinned.files:
        path = os.path.join(base.path, entry.path)
        assert entry.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        expected = sample_sha256(path) if entry.path.endswith(".safetensors") else None
        assert entry.sample_sha256 == expected, entry.path


def test_a_file_pinned_elsewhere_is_not_sampled_from_this_folder(bases) -> None:
    """A quantized base image's model.safetensors has another size than the local 16-bit one of the same name:
    the lock must not get the local file's sample (the image's start-up check would refuse the mounted base)."""
    base = resolve_base(bases["llama"])
    weights = next(e for e in base.files if e.path.endswith(".safetensors"))
    foreign = FileEntry(weights.path, weights.size // 2, "ab" * 32, None)
    files = tuple(foreign if e.path == weights.path else e for e in base.files)
    pinned = sampled_base(dataclasses.replace(base, files=files))
    entry = next(e for e in pinned.files if e.path == weights.path)
    assert entry.sha256 == "ab" * 32 and entry.sample_sha256 is None
