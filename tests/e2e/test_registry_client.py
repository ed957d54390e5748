"""The distribution client against a real registry: cross-repository mounts link a blob without sending it."""

from __future__ import annotations

import hashlib

import pytest

from packager.builders.registry_client import RegistryClient

BLOB = b"a layer packager pushed once" * 100
DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"


@pytest.fixture
def fresh_registry(engine, tmp_path):
    from scripts import local_engine

    started = local_engine.start_registry(str(tmp_path / "registry"))
    yield started
    local_engine.stop_registry(started)


def test_a_blob_in_one_repository_mounts_into_another(fresh_registry) -> None:
    first, second = RegistryClient(fresh_registry.url, "team/a"), RegistryClient(fresh_registry.url, "team/b")
    assert first.upload_bytes(BLOB) == DIGEST
    assert not second.blob_exists(DIGEST)
    assert second.mount_blob(DIGEST, "team/a")
    assert second.blob_exists(DIGEST)


def test_a_mount_from_a_repository_without_the_blob_is_refused_and_leaves_it_absent(fresh_registry) -> None:
    target = RegistryClient(fresh_registry.url, "team/b")
    assert not target.mount_blob(DIGEST, "team/nowhere")
    assert not target.blob_exists(DIGEST)
    assert target.upload_bytes(BLOB) == DIGEST  # the fallback: an ordinary upload still works
