"""Records of pushed base-model images: keyed by the sha256 of every base file, so only the very same files
find one; a corrupt or unpinned record finds nothing; a hand-given image must name its digest."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from packager.errors import UserInputError
from packager.plan import FileEntry, files_key
from packager.planning.model_images import (
    ModelImageRecord,
    find_model_image,
    model_image_for,
    pinned_reference,
    remember_model_image,
)

FILES = (
    FileEntry("config.json", 120, "11" * 32),
    FileEntry("model-00001-of-00002.safetensors", 4096, "22" * 32),
    FileEntry("model-00002-of-00002.safetensors", 2048, "33" * 32),
)
DIGEST = "sha256:" + "ab" * 32
REFERENCE = f"127.0.0.1:5000/acme/base@{DIGEST}"
OTHER = f"127.0.0.1:5000/acme/other@sha256:{'cd' * 32}"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> str:
    root = str(tmp_path / "cache")
    monkeypatch.setenv("PACKAGER_CACHE", root)
    return root


def record(files: tuple[FileEntry, ...] = FILES, reference: str = REFERENCE) -> ModelImageRecord:
    return ModelImageRecord(reference, "127.0.0.1:5000/acme/base:1", "acme/base", files_key(files))


def test_a_record_round_trips(cache) -> None:
    path = remember_model_image(record())
    assert os.path.dirname(path) == os.path.join(cache, "model-images")
    assert find_model_image(FILES) == record()
    assert find_model_image(tuple(reversed(FILES))) == record()  # the key does not depend on the order
    with open(path) as f:
        assert json.load(f)["reference"] == REFERENCE
    assert [n for n in os.listdir(os.path.dirname(path)) if n != os.path.basename(path)] == []  # no temp left


def test_a_later_record_replaces_the_earlier(cache) -> None:
    remember_model_image(record())
    remember_model_image(record(reference=OTHER))
    assert find_model_image(FILES).reference == OTHER


def test_one_different_sha256_finds_nothing() -> None:
    remember_model_image(record())
    changed = (*FILES[:2], dataclasses.replace(FILES[2], sha256="44" * 32))
    assert find_model_image(changed) is None
    assert find_model_image(FILES[:2]) is None  # a file fewer is another base too
    renamed = (*FILES[:2], dataclasses.replace(FILES[2], path="model-2.safetensors"))
    assert find_model_image(renamed) is None


def test_an_unhashed_file_list_finds_nothing() -> None:
    remember_model_image(record())
    unhashed = (*FILES[:2], dataclasses.replace(FILES[2], sha256=None))
    assert find_model_image(unhashed) is None
    assert model_image_for(None, unhashed) == ("", unhashed)


def test_no_record_finds_nothing() -> None:
    assert find_model_image(FILES) is None
    assert model_image_for(None, FILES) == ("", FILES)


@pytest.mark.parametrize(
    "content",
    ['{"reference": ', "[]", '{"reference": "x"}', "", json.dumps({"unknown": 1}), "\x00\xff"],
    ids=["truncated", "list", "missing-fields", "empty", "unknown-field", "binary"],
)
def test_a_corrupt_record_finds_nothing(content) -> None:
    path = remember_model_image(record())
    with open(path, "w", encoding="latin-1") as f:
        f.write(content)
    assert find_model_image(FILES) is None
    assert model_image_for(None, FILES) == ("", FILES)


def test_a_record_without_a_digest_finds_nothing() -> None:
    remember_model_image(record(reference="127.0.0.1:5000/acme/base:1"))
    assert find_model_image(FILES) is None


def test_pinned_reference_accepts_a_digest() -> None:
    assert pinned_reference(REFERENCE) == REFERENCE
    assert pinned_reference(f"acme/base@{DIGEST}") == f"acme/base@{DIGEST}"


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:5000/acme/base:1",
        "acme/base",
        "acme/base@sha256:abc",
        f"acme/base@sha512:{'ab' * 32}",
        f"acme/base@sha256:{'AB' * 32}",
        f"acme base@{DIGEST}",
        "",
    ],
)
def test_pinned_reference_refuses_a_reference_without_a_digest(value) -> None:
    with pytest.raises(UserInputError) as caught:
        pinned_reference(value)
    assert "@sha256" in caught.value.message and "--base-model-image" in caught.value.message


@pytest.mark.parametrize("value", [f"Acme/Base@{DIGEST}", f"acme/base;x@{DIGEST}", f"acme//base@{DIGEST}"])
def test_pinned_reference_refuses_what_the_manifests_would(value) -> None:
    with pytest.raises(UserInputError, match="not a valid image reference"):
        pinned_reference(value)


def test_model_image_for_prefers_the_explicit_one() -> None:
    remember_model_image(record())
    assert model_image_for(OTHER, FILES) == (OTHER, FILES)
    assert model_image_for(None, FILES) == (REFERENCE, FILES)  # a record without split files mounts FILES
    assert model_image_for("", FILES) == (REFERENCE, FILES)
    with pytest.raises(UserInputError, match="@sha256"):
        model_image_for("acme/base:1", FILES)  # a recorded image does not excuse an unpinned explicit one
