"""Signed images end to end: `package --push --sign-key` on a real engine and registry (Debian's docker-registry
2.8, which has no referrers API: the tag-schema fallback), `verify-image` against what the registry serves, a
registry whose blobs or artifacts were replaced, OpenSSF's own `model_signing verify`, and a container that
checks its files against the mounted signature."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import docker
import pytest

from packager.builders.registry_client import RegistryClient
from packager.cli.main import main
from packager.demo import build_adapter, build_base
from packager.package import PackageReport, package
from packager.plan import DeploySpec
from packager.signing.referrers import INDEX_TYPE, fallback_tag
from tests.e2e import containers
from tests.requests import package_request
from tests.signing_keys import write_key

pytestmark = pytest.mark.e2e
WEIGHT = "models/merged/model.safetensors"


@pytest.fixture(scope="module")
def signed(runtime_image, registry, tmp_path_factory):
    """A baked demo image pushed and signed through the command `make package ... PUSH=1 SIGN_KEY=...` runs (docker
    builder, so the engine holds it to run); its JSON report."""
    root = tmp_path_factory.mktemp("signed")
    os.chmod(root, 0o755)
    base = build_base(str(root / "base"), seed=0)
    adapter = build_adapter(base, str(root / "adapter"), seed=1)
    key = write_key(root / "keys" / "sign.pem")
    shutil.copyfile(key, Path(adapter) / "sign.pem")  # a key left in the adapter folder must not ship either
    flags = ["--adapter", f"demo={adapter}", "--layout", "baked", "--base-image", runtime_image, "--runtime",
             "packager", "--builder", "docker", "--tag", f"{registry.url}/signed/demo:1", "--work", str(root / "work"),
             "--target", "compose", "--target", "kubernetes", "--report", str(root / "report.json")]  # fmt: skip
    assert main(["package", *flags, "--push", "--sign-key", str(key)]) == 0
    report = PackageReport(**json.loads((root / "report.json").read_text()))
    return report, root, key


def _verify(reference: str, key: str, capsys) -> tuple[int, str]:
    code = main(["verify-image", reference, "--key", key])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()[-1] if code else captured.out


def _public(root: Path) -> str:
    return str(root / "work" / "signature" / "key.pub")


def test_package_attaches_bom_lock_and_both_signatures(signed, registry) -> None:
    report, _, _ = signed
    signature = report.signature
    assert set(signature["attached"]) == {"bom.cdx.json", "packager.lock.json", "model.sig", "image signature"}
    assert signature["via"] == "tag schema" and signature["files_signed"] >= 5
    client = RegistryClient(registry.url, "signed/demo")
    index = json.loads(client.get_manifest(fallback_tag(report.digest), (INDEX_TYPE,))[0])
    assert {m["digest"] for m in index["manifests"]} == set(signature["attached"].values())
    for entry in index["manifests"]:  # each one an artifact whose subject is the image
        body = client.get_manifest(entry["digest"], ("application/vnd.oci.image.manifest.v1+json",))[0]
        assert json.loads(body)["subject"]["digest"] == report.digest
    assert client.get_manifest(signature["signature_tag"], ("application/vnd.oci.image.manifest.v1+json",))
    assert {"admission-policy.yaml", "kubernetes.yaml", "compose.yaml"} <= set(report.manifests)


def test_verify_image_passes_on_the_pushed_image(signed, capsys) -> None:
    report, root, _ = signed
    code, out = _verify(report.image, _public(root), capsys)
    assert code == 0 and report.digest in out and "tag schema" in out
    code, out = _verify(f"{report.image.rsplit(':', 1)[0]}@{report.digest}", _public(root), capsys)
    assert code == 0


def test_verify_image_refuses_another_key(signed, tmp_path, capsys) -> None:
    from packager.signing.keys import load_signing_key

    report, _, _ = signed
    other = tmp_path / "other.pub"
    other.write_bytes(load_signing_key(str(write_key(tmp_path / "other.pem"))).public_pem)
    code, line = _verify(report.image, str(other), capsys)
    assert code == 1 and line.startswith("error: ") and "does not verify with this public key" in line


def _blob_path(registry, digest: str) -> Path:
    hex_digest = digest.split(":", 1)[1]
    return Path(registry.root) / "storage/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def _layers(registry, report) -> list[dict]:
    client = RegistryClient(registry.url, "signed/demo")
    body = client.get_manifest(report.digest, ("application/vnd.docker.distribution.manifest.v2+json",))[0]
    return json.loads(body)["layers"]


def _altered_layer(blob: bytes, name: str) -> bytes:
    """The same layer (gzip tar) with one byte of `name` flipped."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as source, tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.lstrip("./") == name:
                data = data[:-1] + bytes([data[-1] ^ 1])
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def test_verify_image_names_a_weight_replaced_in_the_registry(signed, registry, capsys) -> None:
    report, root, _ = signed
    for layer in _layers(registry, report):
        path = _blob_path(registry, layer["digest"])
        original = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(original), mode="r:*") as tar:
            if WEIGHT not in [m.name.lstrip("./") for m in tar.getmembers()]:
                continue
        path.write_bytes(_altered_layer(original, WEIGHT))
        try:
            code, line = _verify(report.image, _public(root), capsys)
        finally:
            path.write_bytes(original)
        assert code == 1 and f"/{WEIGHT}" in line, line
        return
    raise AssertionError("no layer holds the weight")


def _replace_artifact_blob(registry, report, title: str, data: bytes):
    client = RegistryClient(registry.url, "signed/demo")
    body = client.get_manifest(report.signature["attached"][title], ("application/vnd.oci.image.manifest.v1+json",))
    return _blob_path(registry, json.loads(body[0])["layers"][0]["digest"]), data


@pytest.mark.parametrize("title", ["packager.lock.json", "bom.cdx.json"])
def test_verify_image_names_a_lock_or_bom_replaced_in_the_registry(signed, registry, title, capsys) -> None:
    report, root, _ = signed
    path, _ = _replace_artifact_blob(registry, report, title, b"")
    original = path.read_bytes()
    path.write_bytes(original.replace(b"a", b"A", 1))  # the same size, other bytes
    try:
        code, line = _verify(report.image, _public(root), capsys)
    finally:
        path.write_bytes(original)
    assert code == 1 and title in line, line


def test_verify_image_refuses_a_consistent_but_unsigned_lock(signed, registry, capsys) -> None:
    """An attacker who re-pushes a whole new lock artifact (its blobs consistent) still fails the signature."""
    from packager.signing.attach import LOCK_TYPE
    from packager.signing.referrers import Artifact, artifact_manifest, attach, descriptor, upload_artifact

    report, root, _ = signed
    client = RegistryClient(registry.url, "signed/demo")
    index_before = client.get_manifest(fallback_tag(report.digest), (INDEX_TYPE,))[0]
    body = client.get_manifest(report.digest, ("application/vnd.docker.distribution.manifest.v2+json",))[0]
    subject = descriptor("application/vnd.docker.distribution.manifest.v2+json", body)
    lock = json.loads(Path(report.lock).read_text())
    lock["base"]["files"][0]["sha256"] = "0" * 64
    forged = Artifact(LOCK_TYPE, "packager.lock.json", json.dumps(lock).encode())
    upload_artifact(client, forged)
    index = json.loads(index_before)
    index["manifests"] = [m for m in index["manifests"] if m.get("artifactType") != LOCK_TYPE]
    client.put_manifest(fallback_tag(report.digest), json.dumps(index).encode(), INDEX_TYPE)
    attach(client, subject, artifact_manifest(forged, subject), LOCK_TYPE)
    try:
        code, line = _verify(report.image, _public(root), capsys)
    finally:
        client.put_manifest(fallback_tag(report.digest), index_before, INDEX_TYPE)
    assert code == 1 and "packager.lock.json" in line and "not the signed one" in line, line


def _extract_signed(docker_client, image: str, names: list[str], folder: Path) -> None:
    container = docker_client.containers.create(image)
    try:
        for name in names:
            chunks, _ = container.get_archive("/" + name)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                member = tar.getmembers()[0]
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    finally:
        container.remove(force=True)


def test_openssf_model_signing_verifies_the_files_taken_out_of_the_image(signed, docker_client, tmp_path) -> None:
    from packager.runtime.signature import signed_digests

    report, root, _ = signed
    signature = Path(report.signature["signature"])
    names = sorted(signed_digests(signature.read_bytes(), Path(_public(root)).read_bytes()))
    folder = tmp_path / "from-image"
    _extract_signed(docker_client, report.image, names, folder)
    command = [sys.executable, "-m", "model_signing", "verify", "key", str(folder), "--signature", str(signature),
               "--public_key", _public(root)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "Verification succeeded" in done.stdout + done.stderr, done.stdout + done.stderr
    (folder / WEIGHT).write_bytes((folder / WEIGHT).read_bytes()[:-1] + b"\0")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "Verification succeeded" not in done.stdout + done.stderr


def test_no_private_key_in_the_context_or_the_image(signed, registry) -> None:
    report, root, key = signed
    secret = Path(key).read_bytes()
    body = secret.split(b"-----")[2].strip().splitlines()[0]  # a line of the key's base64
    for folder, _, names in os.walk(report.context):
        for name in names:
            assert body not in Path(folder, name).read_bytes(), f"{name} holds the private key"
    for layer in _layers(registry, report):
        with tarfile.open(fileobj=io.BytesIO(_blob_path(registry, layer["digest"]).read_bytes()), mode="r:*") as tar:
            for member in tar:
                if member.isfile():
                    assert body not in tar.extractfile(member).read(), f"{member.name} holds the private key"
    for folder, _, names in os.walk(root / "work" / "deploy"):
        for name in names:
            assert body not in Path(folder, name).read_bytes()


@contextlib.contextmanager
def _derived(docker_client, image: str, context: Path, path: str):
    """An image made FROM `image` with `context/path` copied over /path (altered after signing); removed after."""
    (context / "Dockerfile").write_text(f"FROM {image}\nCOPY {path} /{path}\n")
    built, _ = docker_client.images.build(path=str(context), rm=True)
    try:
        yield built.id
    finally:
        docker_client.images.remove(built.id, force=True)


def _run_with_signature(docker_client, image: str, signature_dir: str):
    mount = {signature_dir: {"bind": "/opt/packager/signature", "mode": "ro"}}
    return docker_client.containers.run(image, detach=True, network_mode="none", volumes=mount)


def test_the_signed_container_serves_with_its_signature_mounted(signed, docker_client) -> None:
    report, root, _ = signed
    container = _run_with_signature(docker_client, report.image, str(root / "work" / "deploy" / "signature"))
    try:
        containers.wait_healthy(container)
        assert containers.call(container, "/v1/models")["data"][0]["id"] == "demo"
        assert "verified against the mounted signature" in container.logs().decode()
    finally:
        container.remove(force=True)


def test_a_weight_altered_after_signing_refuses_to_start(signed, docker_client, tmp_path) -> None:
    report, root, _ = signed
    context = tmp_path / "tamper"
    _extract_signed(docker_client, report.image, [WEIGHT], context)
    weight = context / WEIGHT
    weight.write_bytes(weight.read_bytes()[:-1] + b"\0")
    with _derived(docker_client, report.image, context, WEIGHT) as tampered:
        container = _run_with_signature(docker_client, tampered, str(root / "work" / "deploy" / "signature"))
        code, errors = containers.exit_and_errors(container)
    assert code == 3 and len(errors) == 1 and f"/{WEIGHT} differs from the signed file" in errors[0], errors


def test_signing_twice_gives_the_same_signed_statement_and_bom(
    signed, runtime_image, registry, tmp_path, capsys
) -> None:
    """Signatures are ECDSA (random): what they sign, the BOM and the image digest are the same each time."""
    _, root, key = signed
    reports = []
    for run in ("one", "two"):
        request = package_request(
            (("demo", str(root / "adapter")),), "baked", runtime_image, f"{registry.url}/signed/repro:1",
            work=str(tmp_path / run), quiet=True, verify=False, runtime="packager", builder="oci", push=True,
            sign_key=str(key), deploy=DeploySpec(("compose",)),
        )  # fmt: skip
        reports.append(package(request, log=lambda _line: None))
    first, second = reports
    assert first.digest == second.digest
    envelopes = [json.loads(Path(r.signature["signature"]).read_bytes())["dsseEnvelope"] for r in reports]
    assert envelopes[0]["payload"] == envelopes[1]["payload"]
    assert envelopes[0]["signatures"] != envelopes[1]["signatures"]
    assert Path(first.context, "bom.cdx.json").read_bytes() == Path(second.context, "bom.cdx.json").read_bytes()
    assert first.signature["attached"]["bom.cdx.json"] == second.signature["attached"]["bom.cdx.json"]
    code, out = _verify(f"{registry.url}/signed/repro:1", second.signature["public_key"], capsys)
    assert code == 0 and first.digest in out  # the oci builder's layers: plain tars, the runtime's of many files


@pytest.fixture(scope="module")
def signed_shared(runtime_image, registry, tmp_path_factory):
    """Two adapters in the shared layout, pushed and signed; the base (readable by the container's user) mounted."""
    root = tmp_path_factory.mktemp("signed-shared")
    os.chmod(root, 0o755)
    base = build_base(str(root / "base"), seed=0)
    adapters = {name: build_adapter(base, str(root / name), seed=seed) for name, seed in (("sql", 1), ("chat", 2))}
    for folder, _, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)
    key = write_key(root / "keys" / "sign.pem")
    request = package_request(
        tuple(adapters.items()), "shared", runtime_image, f"{registry.url}/signed/shared:1", work=str(root / "work"),
        quiet=True, verify=False, runtime="packager", builder="docker", push=True, sign_key=str(key), base=base,
        deploy=DeploySpec(("compose",)),
    )  # fmt: skip
    return package(request, log=lambda _line: None), root, base


def _start_shared(docker_client, image: str, root: Path, base: str):
    volumes = {
        str(root / "work" / "deploy" / "signature"): {"bind": "/opt/packager/signature", "mode": "ro"},
        base: {"bind": "/base", "mode": "ro"},
    }
    return docker_client.containers.run(image, detach=True, network_mode="none", volumes=volumes)


def test_a_signed_shared_image_verifies_and_serves_on_its_base(signed_shared, docker_client, capsys) -> None:
    report, root, base = signed_shared
    names = signed_digests_of(report)
    assert {"adapters/sql/adapter_model.safetensors", "adapters/chat/adapter_model.safetensors"} <= names
    assert not any(name.startswith("base/") for name in names)  # the base is pinned by the signed lock instead
    code, _ = _verify(report.image, _public(root), capsys)
    assert code == 0
    container = _start_shared(docker_client, report.image, root, base)
    try:
        containers.wait_healthy(container)
        assert {m["id"] for m in containers.call(container, "/v1/models")["data"]} == {"sql", "chat"}
        assert "verified against the mounted signature" in container.logs().decode()
    finally:
        container.remove(force=True)


def test_a_swapped_adapter_refuses_to_start(signed_shared, docker_client, tmp_path) -> None:
    report, root, base = signed_shared
    swapped = "adapters/sql/adapter_model.safetensors"
    context = tmp_path / "swap"
    (context / "adapters" / "sql").mkdir(parents=True)
    shutil.copyfile(root / "chat" / "adapter_model.safetensors", context / swapped)
    with _derived(docker_client, report.image, context, swapped) as image:
        code, errors = containers.exit_and_errors(_start_shared(docker_client, image, root, base))
    assert code == 3 and len(errors) == 1 and f"/{swapped} differs from the signed file" in errors[0], errors


def signed_digests_of(report) -> set[str]:
    from packager.runtime.signature import signed_digests

    key = Path(report.signature["public_key"]).read_bytes()
    return set(signed_digests(Path(report.signature["signature"]).read_bytes(), key))


def test_packager_sbom_reads_the_attached_bom_of_a_pushed_image(signed, docker_client, capsys) -> None:
    """Not pulled: the BOM comes from the registry, where it is attached to the image."""
    report, _, _ = signed
    reference = f"{report.image.rsplit(':', 1)[0]}@{report.digest}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(reference)  # the digest reference only: the tag keeps the image
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(reference)
    assert main(["sbom", reference]) == 0
    assert capsys.readouterr().out == Path(report.context, "bom.cdx.json").read_text()
