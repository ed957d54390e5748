"""The runnable FROM image of a base-model image: a static busybox found on this machine, packed into one
deterministic tar (busybox, its applets, /tmp, an empty /models) whose tag follows its content. No engine."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile

import pytest

from packager.errors import UserInputError
from packager.image.filters import image_ref
from packager.image.paths import FIXED_MTIME
from packager.model_image import runnable
from packager.model_image.runnable import _is_static, find_busybox, runnable_tag, runnable_tar

BUSYBOX = "/bin/busybox"
DYNAMIC = next((p for p in ("/bin/ls", "/usr/bin/ls", "/bin/sh") if os.path.isfile(p)), None)


def _elf(program_types: list[int]) -> bytes:
    """A minimal little-endian ELF64 header with one program header per type (64-byte header, 56-byte entries)."""
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    header[5] = 1  # little endian
    header[32:40] = (64).to_bytes(8, "little")  # e_phoff
    header[54:56] = (56).to_bytes(2, "little")  # e_phentsize
    header[56:58] = len(program_types).to_bytes(2, "little")  # e_phnum
    entries = b"".join(kind.to_bytes(4, "little") + bytes(52) for kind in program_types)
    return bytes(header) + entries


@pytest.fixture(scope="module")
def busybox() -> str:
    """Debian's static busybox at /bin/busybox; apt-installs it (with every other missing Debian package) when
    absent, as `make test` does for the engine."""
    if not os.path.isfile(BUSYBOX):
        from scripts import local_engine

        local_engine.ensure_packages()
    assert os.path.isfile(BUSYBOX), "busybox-static is not installed and could not be installed"
    return BUSYBOX


@pytest.fixture(scope="module")
def layer(busybox: str) -> bytes:
    return runnable_tar(busybox)


def test_busybox_here_is_static(busybox: str) -> None:
    assert _is_static(BUSYBOX) is True
    assert find_busybox() in (*runnable.BUSYBOX_PATHS, shutil.which("busybox"))


@pytest.mark.skipif(DYNAMIC is None, reason="no dynamically linked binary such as /bin/ls here")
def test_a_dynamic_binary_is_not_static() -> None:
    assert _is_static(DYNAMIC) is False


def test_is_static_reads_the_program_headers(tmp_path) -> None:
    cases = {"static": ([1, 4, 1], True), "dynamic": ([6, 3, 1, 2], False), "none": ([], True)}
    for name, (kinds, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(_elf(kinds))
        assert _is_static(str(path)) is expected, name
    elf32 = bytearray(_elf([1]))
    elf32[4] = 1  # ELFCLASS32
    for name, data in {"script": b"#!/bin/sh\necho hi\n" * 8, "empty": b"", "elf32": bytes(elf32)}.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert _is_static(str(path)) is False, name


def test_without_a_static_busybox_the_error_names_the_fix(tmp_path, monkeypatch) -> None:
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(_elf([6, 3, 1]))
    monkeypatch.setattr(runnable, "BUSYBOX_PATHS", (str(dynamic), str(tmp_path / "missing")))
    monkeypatch.setattr(runnable.shutil, "which", lambda _name: None)
    with pytest.raises(UserInputError) as caught:
        find_busybox()
    assert "busybox-static" in caught.value.message and "--from" in caught.value.message


def test_runnable_tar_is_deterministic(layer) -> None:
    assert runnable_tar(BUSYBOX) == layer


def test_runnable_tar_holds_busybox_applets_tmp_and_an_empty_models_dir(layer) -> None:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        data = tar.extractfile(members["bin/busybox"]).read()
    with open(BUSYBOX, "rb") as f:
        assert hashlib.sha256(data).digest() == hashlib.sha256(f.read()).digest()
    busybox = members["bin/busybox"]
    assert busybox.isfile() and busybox.mode == 0o755
    for applet in ("sh", "ln", "sleep", "cp", "true"):
        link = members[f"bin/{applet}"]
        assert link.issym() and link.linkname == "busybox", applet
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["models"].isdir() and members["models"].mode == 0o755
    assert members["bin"].isdir()
    assert not [name for name in members if name.startswith(("models/", "tmp/"))]
    for member in members.values():
        assert (member.mtime, member.uid, member.gid) == (FIXED_MTIME, 0, 0), member.name
        assert not member.name.startswith("/") and ".." not in member.name.split("/")


def test_runnable_tag_follows_the_content(layer) -> None:
    tag = runnable_tag(layer)
    assert image_ref(tag) == tag and tag.startswith("packager-modelbase:")
    assert runnable_tag(runnable_tar(BUSYBOX)) == tag
    assert runnable_tag(layer + b"\0") != tag
    assert runnable_tag(b"one") != runnable_tag(b"two")


def test_runnable_tag_changes_with_the_busybox(layer, tmp_path) -> None:
    other = tmp_path / "busybox"
    with open(BUSYBOX, "rb") as f:
        other.write_bytes(f.read() + b"\0")
    assert runnable_tag(runnable_tar(str(other))) != runnable_tag(layer)
