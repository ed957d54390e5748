"""The blob-location hints behind cross-repository mounts: per registry, never the target itself, newest wins."""

from __future__ import annotations

import pytest

from packager.builders import blob_locations
from packager.builders.blob_locations import remember_blobs, source_repository

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))


def test_a_pushed_blob_is_found_in_its_repository_for_another_target() -> None:
    remember_blobs("127.0.0.1:5000", "team/a", [DIGEST])
    assert source_repository("127.0.0.1:5000", DIGEST, "team/b") == "team/a"
    assert source_repository("127.0.0.1:5000", DIGEST, "team/a") is None  # the target itself: nothing to mount
    assert source_repository("127.0.0.1:5001", DIGEST, "team/b") is None  # mounts never cross registries
    assert source_repository("127.0.0.1:5000", OTHER, "team/b") is None


def test_the_newest_repository_wins_and_the_list_stays_bounded(monkeypatch) -> None:
    remember_blobs("r:1", "team/a", [DIGEST, OTHER])
    remember_blobs("r:1", "team/b", [DIGEST])
    assert source_repository("r:1", DIGEST, "team/c") == "team/b"
    assert source_repository("r:1", OTHER, "team/c") == "team/a"
    monkeypatch.setattr(blob_locations, "MAX_PER_REGISTRY", 2)
    remember_blobs("r:1", "team/d", ["sha256:" + "ef" * 32])
    assert source_repository("r:1", OTHER, "team/c") is None  # the oldest hint went


@pytest.mark.parametrize("content", ["", "{", "[]", '{"r:1": 5}'])
def test_a_broken_hint_file_is_no_hint(tmp_path, content) -> None:
    path = tmp_path / "cache" / "blob-locations.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert source_repository("r:1", DIGEST, "team/b") is None
    remember_blobs("r:1", "team/a", [DIGEST])  # and it is rewritten whole
    assert source_repository("r:1", DIGEST, "team/b") == "team/a"
