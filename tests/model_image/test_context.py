"""The base-model image's build context: a Dockerfile with one COPY per layer FROM the runnable image, the
user's files placed but never touched, a changed file refused with nothing left behind, and layer tars that are
byte-identical whenever and wherever the context is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile

import pytest

from packager.builders.oci_image import layer_tar
from packager.errors import UserInputError
from packager.image.dockerfile import parse_dockerfile
from packager.image.paths import FIXED_MTIME
from packager.model_image import context as context_module
from packager.model_image.context import render_dockerfile, write_model_context
from packager.model_image.plan import ModelImagePlan, plan_model_image
from packager.resolve.resolver import resolve_base
from tests.model_image.test_plan import SHARDS, write_sharded_base

RUNNABLE = "packager-modelbase:0123abcd"


@pytest.fixture
def plan(tmp_path) -> ModelImagePlan:
    base = resolve_base(write_sharded_base(str(tmp_path / "tiny-base")))
    return plan_model_image(base, "127.0.0.1:5000/acme/base:1", RUNNABLE, "oci", True, 10**9)


def _recipe(context: str):
    with open(os.path.join(context, "Dockerfile")) as f:
        return parse_dockerfile(f.read())


def _layer_digests(context: str) -> list[str]:
    return [hashlib.sha256(b"".join(layer_tar(context, layer))).hexdigest() for layer in _recipe(context).layers]


def _user_files(plan: ModelImagePlan) -> dict[str, tuple[int, int, int]]:
    """path -> (mode, mtime_ns, size) of every base file."""
    result = {}
    for entry in plan.base.files:
        st = os.stat(os.path.join(plan.base.path, entry.path))
        result[entry.path] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size)
    return result


def test_dockerfile_copies_one_layer_each_from_the_runnable_image(plan, tmp_path) -> None:
    written = write_model_context(plan, str(tmp_path / "ctx"))
    with open(os.path.join(written.path, "Dockerfile")) as f:
        text = f.read()
    assert text == render_dockerfile(plan)
    recipe = parse_dockerfile(text)
    assert recipe.base == RUNNABLE
    assert [layer.sources for layer in recipe.layers] == [(f"{layer.name}/",) for layer in plan.layers]
    assert all(layer.destination == "/" and (layer.uid, layer.gid) == (0, 0) for layer in recipe.layers)
    assert text.count("\nCOPY ") == len(plan.layers) == 1 + len(SHARDS)
    assert recipe.cmd == ["sleep", "infinity"]
    assert recipe.labels == dict(plan.labels())
    files = json.loads(recipe.labels["io.packager.base.files"])
    assert files == {f.path: f.sha256 for f in plan.base.files}


def test_context_places_every_file_under_models(plan, tmp_path) -> None:
    written = write_model_context(plan, str(tmp_path / "ctx"))
    assert sorted(f.path for f in written.files) == sorted(f"/models/{f.path}" for f in plan.base.files)
    for layer in plan.layers:
        for entry in layer.files:
            placed = os.path.join(written.path, layer.name, "models", entry.path)
            with open(placed, "rb") as f, open(os.path.join(plan.base.path, entry.path), "rb") as g:
                assert f.read() == g.read()
    assert sorted(os.listdir(written.path)) == ["Dockerfile", "meta", "weights"]


@pytest.mark.parametrize("linked", [True, False], ids=["hard-linked", "copied"])
def test_user_files_are_never_modified(plan, tmp_path, monkeypatch, linked) -> None:
    for entry in plan.base.files:
        os.chmod(os.path.join(plan.base.path, entry.path), 0o600)
    if not linked:  # another filesystem: os.link fails and the file is copied
        monkeypatch.setattr(context_module, "link_or_copy", lambda source, target: shutil.copyfile(source, target))
    before = _user_files(plan)
    written = write_model_context(plan, str(tmp_path / "ctx"))
    assert _user_files(plan) == before
    assert all(mode == 0o600 for mode, _, _ in before.values())
    shard = os.path.join(plan.base.path, SHARDS[0])
    placed = os.path.join(written.path, f"weights/{SHARDS[0]}", "models", SHARDS[0])
    assert os.path.samefile(shard, placed) is linked


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "grown"])
def test_a_file_changed_after_pinning_is_refused_and_nothing_is_left(plan, tmp_path, same_size) -> None:
    target = os.path.join(plan.base.path, SHARDS[1])
    with open(target, "r+b") as f:
        if same_size:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\0")
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new stamp even on a coarse clock
    out = tmp_path / "out"
    with pytest.raises(UserInputError) as caught:
        write_model_context(plan, str(out))
    assert SHARDS[1] in caught.value.message and "changed since it was pinned" in caught.value.message
    assert not out.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".out")] == []


def test_a_refused_rewrite_keeps_the_previous_context(plan, tmp_path) -> None:
    out = tmp_path / "out"
    write_model_context(plan, str(out))
    before = _layer_digests(str(out))
    config = os.path.join(plan.base.path, "config.json")
    with open(f"{config}.new", "w") as f:  # saved the way editors save: a new file renamed over the old
        f.write("{}")
    os.replace(f"{config}.new", config)
    with pytest.raises(UserInputError, match="changed since it was pinned"):
        write_model_context(plan, str(out))
    assert _layer_digests(str(out)) == before


def test_layer_tars_are_byte_identical_across_folders_and_times(plan, tmp_path, monkeypatch) -> None:
    first = write_model_context(plan, str(tmp_path / "one")).path
    monkeypatch.setattr(context_module, "link_or_copy", lambda source, target: shutil.copyfile(source, target))
    (tmp_path / "elsewhere").mkdir()
    second = write_model_context(plan, str(tmp_path / "elsewhere" / "two")).path
    for folder, _, files in os.walk(second):  # the copies get other times and modes than the user's files
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, 0o600)
            os.utime(path, (2_000_000_000, 2_000_000_000))
    assert os.stat(os.path.join(first, "meta/models/config.json")).st_mtime != 2_000_000_000
    digests = _layer_digests(first)
    assert len(digests) == len(plan.layers) and len(set(digests)) == len(digests)
    assert _layer_digests(second) == digests


def test_layer_tar_entries_have_fixed_times_owner_and_modes(plan, tmp_path) -> None:
    context = write_model_context(plan, str(tmp_path / "ctx")).path
    recipe = _recipe(context)
    seen = []
    for layer, expected in zip(recipe.layers, plan.layers, strict=True):
        path = tmp_path / "layer.tar"
        path.write_bytes(b"".join(layer_tar(context, layer)))
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for member in members:
                assert member.name == "models" or member.name.startswith("models/"), member.name
                assert (member.mtime, member.uid, member.gid) == (FIXED_MTIME, 0, 0), member.name
                assert member.mode == (0o755 if member.isdir() else 0o644), member.name
                assert member.isdir() or member.isfile(), member.name
            files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
        assert sorted(files) == sorted(f"models/{f.path}" for f in expected.files)
        for entry in expected.files:
            assert hashlib.sha256(files[f"models/{entry.path}"]).hexdigest() == entry.sha256
        seen += files
    assert sorted(seen) == sorted(f"models/{f.path}" for f in plan.base.files)


def test_hadolint_passes_the_base_model_dockerfile(plan, tmp_path) -> None:
    import subprocess
    import sys

    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_dockerfile(plan))
    proc = subprocess.run(
        [hadolint, "-f", "json", "--failure-threshold", "warning", str(dockerfile)], capture_output=True
    )
    findings = json.loads(proc.stdout or b"[]")
    assert proc.returncode == 0 and not [f for f in findings if f["level"] in ("error", "warning")], findings
