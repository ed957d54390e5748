"""The build context holds exactly the plan's pinned files, as regular files, stamped, and listed in the lock."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from packager.errors import UserInputError
from packager.image.context import ModelFiles, write_context
from packager.image.paths import FIXED_MTIME
from packager.plan import FileEntry
from tests import plans

LAYER = re.compile(r"^(model/weights/[^/]+|model/meta|runtime|config|adapters/[^/]+)/")


def _entry(folder, name: str, data: bytes) -> FileEntry:
    (folder / name).write_bytes(data)
    return FileEntry(name, len(data), hashlib.sha256(data).hexdigest())


def _context_files(root: str) -> dict[str, str]:
    """relative path -> sha256 of every file under the context's layer folders."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    files = (_entry(folder, "model.safetensors", b"w" * 1000), _entry(folder, "config.json", b"{}"))
    (folder / "notes.txt").write_text("not pinned")
    return ModelFiles(str(folder), files)


def test_baked_context_holds_the_pinned_model_files_linked_and_stamped(model, tmp_path) -> None:
    context = write_context(plans.baked(), str(tmp_path / "ctx"), model, model.files)
    weight = os.path.join(context.path, "model/weights/model.safetensors/models/merged/model.safetensors")
    assert os.stat(weight).st_ino == os.stat(os.path.join(model.folder, "model.safetensors")).st_ino
    assert os.path.isfile(os.path.join(context.path, "model/meta/models/merged/config.json"))
    assert not any("notes.txt" in p for p in _context_files(context.path))
    assert {os.stat(os.path.join(d, n)).st_mtime for d, _, ns in os.walk(context.path) for n in ns} == {FIXED_MTIME}
    runtime = json.loads(Path(context.path, "config/opt/packager/runtime.json").read_text())
    assert runtime == plans.baked().image.runtime.to_json()


def test_every_file_in_the_layers_is_listed_in_the_lock_with_its_sha256(model, tmp_path) -> None:
    context = write_context(plans.baked(), str(tmp_path / "ctx"), model, model.files)
    lock = json.loads(Path(context.lock_path).read_text())
    listed = {f["path"]: f["sha256"] for f in lock["image"]["files"]}
    found = {
        LAYER.sub("/", p): digest
        for p, digest in _context_files(context.path).items()
        if LAYER.match(p) and not p.endswith(("packager.lock.json", "bom.cdx.json"))  # made from the lock
    }
    assert found == listed and "/opt/packager/runtime.json" in listed
    assert {f["path"] for f in lock["output"]["files"]} == {"config.json", "model.safetensors"}
    assert lock["image"]["tag"] == plans.baked().image.tag
    build = {f["path"]: f["sha256"] for f in lock["image"]["build_files"]}
    assert set(build) == {"Dockerfile", ".dockerignore"}
    assert all(_context_files(context.path)[name] == digest for name, digest in build.items())


def test_shared_context_takes_pinned_adapter_files_through_symlinks_as_copies(tmp_path) -> None:
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    entries = []
    for name, data in (("adapter_config.json", b'{"peft_type": "LORA"}'), ("adapter_model.safetensors", b"a" * 64)):
        entries.append(_entry(blobs, hashlib.sha256(data).hexdigest(), data))
        os.symlink(f"../blobs/{entries[-1].path}", snapshot / name)
        entries[-1] = FileEntry(name, len(data), entries[-1].sha256)
    (tmp_path / "secret").write_text("host secret")
    os.symlink(tmp_path / "secret", snapshot / "extra-link")
    served = plans.adapter("sql", entries[1].sha256)
    served = type(served)("sql", type(served.spec)(str(snapshot), None, "LORA", {}, tuple(entries)))
    context = write_context(plans.shared((served,)), str(tmp_path / "ctx"))
    placed = os.path.join(context.path, "adapters/sql/adapters/sql/adapter_model.safetensors")
    assert not os.path.islink(placed) and Path(placed).read_bytes() == b"a" * 64
    assert os.stat(placed).st_nlink == 1  # a copy: stamping it never touches the user's file
    everything = "".join(Path(d, n).read_text(errors="replace") for d, _, ns in os.walk(context.path) for n in ns)
    assert "host secret" not in everything and "extra-link" not in str(_context_files(context.path))


def test_a_file_changed_since_it_was_pinned_is_refused_and_nothing_is_written(tmp_path) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    entry = _entry(folder, "adapter_model.safetensors", b"a" * 64)
    (folder / "adapter_model.safetensors").write_bytes(b"b" * 64)  # same size, other bytes
    served = type(plans.adapter("sql", ""))(
        "sql", plans.adapter("sql", "").spec.__class__(str(folder), None, "LORA", {}, (entry,))
    )
    with pytest.raises(UserInputError, match="changed since it was pinned"):
        write_context(plans.shared((served,)), str(tmp_path / "ctx"))
    assert sorted(os.listdir(tmp_path)) == ["sql"]


def test_a_bad_plan_writes_nothing(model, tmp_path) -> None:
    with pytest.raises(UserInputError):
        write_context(plans.with_image(plans.baked(), tag="Bad Image"), str(tmp_path / "ctx"), model, model.files)
    assert sorted(os.listdir(tmp_path)) == ["merged"]
