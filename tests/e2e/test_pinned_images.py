"""Images hold only what the plan pins, and the same inputs give the same digest (real engine and registry).

Layers are read back from the registry, so what is checked is what a cluster would pull.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path

import pytest

from packager.builders.base import BuildRequest
from packager.builders.buildah import BuildahBuilder
from packager.cli.main import main
from packager.demo import build_adapter, build_base
from packager.package import package
from tests.models import fake_hf_cache
from tests.requests import package_request

pytestmark = pytest.mark.e2e
SECRET = b"host-secret-7d1f0c2a-must-never-ship"
TRAINER_MARK = b"optimizer-state-5b9e-never-ship"


MADE_FROM_THE_LOCK = {"/opt/packager/packager.lock.json", "/opt/packager/bom.cdx.json"}  # cannot list themselves


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A base; a trainer run (checkpoint-5/ with trainer state, a README and a symlink to a host file); the same
    adapter laid out as a Hugging Face cache snapshot (nothing but symlinks into blobs/)."""
    root = tmp_path_factory.mktemp("pinned")
    base = build_base(str(root / "base"), seed=0)
    run = root / "run"
    checkpoint = Path(build_adapter(base, str(run / "checkpoint-5"), seed=3))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json"):
        (checkpoint / name).write_bytes(TRAINER_MARK + name.encode())
    (checkpoint / "README.md").write_bytes(TRAINER_MARK + b" readme")
    (root / "host-secret.txt").write_bytes(SECRET)
    os.symlink(root / "host-secret.txt", checkpoint / "notes.txt")
    hf_home = root / "hf"
    commit = fake_hf_cache(hf_home, "acme/snap-lora", build_adapter(base, str(root / "snap-src"), seed=4))
    snapshot = hf_home / "hub" / "models--acme--snap-lora" / "snapshots" / commit
    return {"base": base, "run": str(run), "snapshot": str(snapshot)}


def _package(tmp_path, runtime_image, adapters, layout, tag, work="work", **kw):
    request = package_request(
        tuple(adapters),
        layout,
        runtime_image,
        tag,
        work=str(tmp_path / work),
        quiet=True,
        verify=False,
        runtime="packager",
        **kw,  # the runtime image the e2e fixtures build; vLLM images have their own tests
    )
    return package(request, log=lambda _line: None)


def _registry_get(registry, path: str, accept: str = "") -> bytes:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(f"http://{registry.url}/v2/{path}", headers=headers)
    return urllib.request.urlopen(request, timeout=60).read()


def pushed_layers(registry, repository: str, digest: str) -> list[bytes]:
    """Every layer blob of a pushed image, as the registry serves it."""
    manifest = json.loads(
        _registry_get(registry, f"{repository}/manifests/{digest}", "application/vnd.oci.image.manifest.v1+json")
    )
    return [_registry_get(registry, f"{repository}/blobs/{layer['digest']}") for layer in manifest["layers"]]


def layer_files(blob: bytes) -> dict[str, str]:
    """/path -> sha256 of every regular file in a layer tar (uncompressed or gzip)."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as archive:
        for member in archive:
            if member.isfile():
                data = archive.extractfile(member).read()
                found["/" + member.name.lstrip("./")] = hashlib.sha256(data).hexdigest()
    return found


def test_trainer_run_and_hf_snapshot_ship_only_pinned_files(inputs, runtime_image, registry, tmp_path) -> None:
    tag = f"{registry.url}/pinned/shared:1"
    adapters = [("run", inputs["run"]), ("snap", inputs["snapshot"])]
    report = _package(tmp_path, runtime_image, adapters, "shared", tag, base=inputs["base"], push=True)
    lock = json.loads(Path(report.lock).read_text())
    blobs = pushed_layers(registry, "pinned/shared", report.digest)
    base_layers = sum(1 for layer in report.layers if layer["content"] == "base image")
    ours = blobs[base_layers:]
    assert all(SECRET not in blob and TRAINER_MARK not in blob for blob in ours)
    shipped: dict[str, str] = {}
    for blob in ours:
        shipped.update(layer_files(blob))
    listed = {f["path"]: f["sha256"] for f in lock["image"]["files"]}
    assert set(shipped) - MADE_FROM_THE_LOCK == set(listed)
    assert all(shipped[path] == digest for path, digest in listed.items())
    snap = lock["adapters"]["snap"]["files"]
    weights = next(f for f in snap if f["path"] == "adapter_model.safetensors")
    assert shipped["/adapters/snap/adapter_model.safetensors"] == weights["sha256"]
    assert os.path.islink(os.path.join(inputs["snapshot"], "adapter_model.safetensors"))  # pinned by content
    assert lock["adapters"]["run"]["checkpoint"] == 5


def test_baked_layers_hold_exactly_the_lock_files(inputs, runtime_image, registry, tmp_path) -> None:
    report = _package(
        tmp_path,
        runtime_image,
        [("run", inputs["run"])],
        "baked",
        f"{registry.url}/pinned/baked:1",
        base=inputs["base"],
        push=True,
    )
    lock = json.loads(Path(report.lock).read_text())
    blobs = pushed_layers(registry, "pinned/baked", report.digest)
    base_layers = sum(1 for layer in report.layers if layer["content"] == "base image")
    for layer, blob in zip(report.layers[base_layers:], blobs[base_layers:], strict=True):
        assert SECRET not in blob and TRAINER_MARK not in blob, layer["content"]
        assert len(layer_files(blob)) >= 1
    shipped = {}
    for blob in blobs[base_layers:]:
        shipped.update(layer_files(blob))
    listed = {f["path"]: f["sha256"] for f in lock["image"]["files"]}
    assert set(shipped) - MADE_FROM_THE_LOCK == set(listed)
    assert all(shipped[path] == digest for path, digest in listed.items())
    bom = Path(report.context, "bom.cdx.json").read_bytes()  # the ML-BOM ships at its fixed path, as written
    assert shipped["/opt/packager/bom.cdx.json"] == hashlib.sha256(bom).hexdigest()


@pytest.fixture(scope="module")
def twice(inputs, runtime_image, registry, tmp_path_factory):
    """The same inputs packaged and pushed twice, from two work folders (oci builder)."""
    tmp = tmp_path_factory.mktemp("twice")
    tag = f"{registry.url}/pinned/repro:1"
    return [
        _package(
            tmp, runtime_image, [("run", inputs["run"])], "baked", tag, work=f"work-{i}", base=inputs["base"], push=True
        )
        for i in (1, 2)
    ]


def test_two_package_runs_give_the_same_digest(twice) -> None:
    first, second = twice
    assert first.builder == second.builder == "oci" and first.reproducible
    assert first.digest == second.digest and first.image_id == second.image_id


def test_render_then_build_then_push_gives_the_package_digest(
    twice, inputs, runtime_image, registry, tmp_path, capsys
) -> None:
    tag = f"{registry.url}/pinned/repro:1"
    work = tmp_path / "work"
    common = [
        "--adapter",
        f"run={inputs['run']}",
        "--base",
        inputs["base"],
        "--layout",
        "baked",
        "--base-image",
        runtime_image,
        "--tag",
        tag,
        "--work",
        str(work),
        "--no-verify",
        "--quiet",
        "--runtime",
        "packager",
    ]
    assert main(["render", *common]) == 0
    context = str(work / "context")
    assert main(["build", context, "--builder", "oci", "--quiet"]) == 0
    assert main(["push", "--context", context, "--registry", f"{registry.url}/pinned/repro", "--tag", "1"]) == 0
    out = capsys.readouterr().out
    digest = re.search(r"@(sha256:[0-9a-f]{64})", out).group(1)
    assert digest == twice[0].digest


def test_a_rendered_context_builds_unchanged_with_docker_and_buildah(twice, docker_client, tmp_path) -> None:
    context = tmp_path / "context"
    shutil.copytree(twice[0].context, context)  # a user's CI gets the folder, not packager
    image, _ = docker_client.images.build(
        path=str(context), tag="pinned/docker-build:1", network_mode="none", pull=False, rm=True
    )
    assert image.labels["io.packager.layout"] == "baked"
    built = BuildahBuilder().build(BuildRequest(str(context), "pinned/buildah-build:1"), log=lambda _l: None)
    assert len(built.layers) == len(twice[0].layers)


def test_buildah_with_a_fixed_timestamp_builds_the_same_image_twice(twice) -> None:
    builder = BuildahBuilder()
    ids = [
        builder.build(BuildRequest(twice[0].context, f"pinned/buildah-repro:{i}", nocache=True), log=lambda _l: None)
        for i in (1, 2)
    ]
    assert ids[0].image_id == ids[1].image_id
    assert [layer.digest for layer in ids[0].layers] == [layer.digest for layer in ids[1].layers]
