"""The shared layout at scale, with the real engine and registry: the base pushed once as an image, one volume
filled from it (the local analogue of a KServe modelcar or a Kubernetes ImageVolume), three servers of one
shared image reading it read-only and answering per adapter as PEFT does, and a server given another base
refusing to start. Re-pushing the base sends no weight bytes; a new adapter costs about its own bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from packager.demo import build_adapter, build_base
from packager.model_image.make import BaseImageRequest, package_base
from packager.package import package
from packager.plan import DeploySpec
from tests.e2e import containers
from tests.e2e.test_containers import _completion, peft_answers
from tests.requests import package_request

pytestmark = pytest.mark.e2e
PODS = 3


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, str]:
    """Two bases with one config and different weights, and three adapters on the first."""
    root = tmp_path_factory.mktemp("many-pods")
    folders = {
        "base": build_base(str(root / "base"), seed=0, hidden_size=128),
        "other-base": build_base(str(root / "other-base"), seed=7, hidden_size=128),
    }
    for name, seed in (("sql", 1), ("chat", 2), ("late", 3)):
        folders[name] = build_adapter(folders["base"], str(root / name), seed=seed, r=32)
    return folders  # files stay 0600: the base image's layers make them 0644, so uid 10001 can read them


def _push_base(path: str, tag: str, work: str, max_layer_bytes: int = 10**10):
    request = BaseImageRequest(path, tag=tag, push=True, builder="oci", work=work, max_layer_bytes=max_layer_bytes)
    return package_base(request, log=lambda _line: None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """This module's own record of pushed base images: other modules package shared images of the same demo base
    and must not find these."""
    path = str(tmp_path_factory.mktemp("scale-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PACKAGER_CACHE", path)
        yield path


@pytest.fixture(autouse=True)
def _this_modules_cache(cache, monkeypatch) -> None:
    """Test bodies too (the session's autouse cache would shadow it): one cache, as one user has."""
    monkeypatch.setenv("PACKAGER_CACHE", cache)


@pytest.fixture(scope="module")
def base_image(bases, registry, cache, tmp_path_factory):
    return _push_base(bases["base"], f"{registry.url}/scale/base:1", str(tmp_path_factory.mktemp("base-work")))


def _package_shared(runtime_image: str, adapters, tag: str, work: str):
    request = package_request(
        tuple(adapters),
        "shared",
        runtime_image,
        tag,
        work=work,
        builder="oci",
        push=True,
        quiet=True,
        runtime="packager",
        deploy=DeploySpec(("compose", "kubernetes", "kserve")),
    )
    return package(request, log=lambda _line: None)


@pytest.fixture(scope="module")
def shared(bases, base_image, runtime_image, registry, tmp_path_factory):
    adapters = [("sql", bases["sql"]), ("chat", bases["chat"])]
    work = str(tmp_path_factory.mktemp("shared-work"))
    return _package_shared(runtime_image, adapters, f"{registry.url}/scale/shared:1", work)


def test_repushing_an_unchanged_base_sends_no_weight_bytes(bases, base_image, registry, tmp_path) -> None:
    storage = os.path.join(registry.root, "storage", "docker", "registry", "v2", "blobs")
    before = containers.folder_bytes(storage)
    again = _push_base(bases["base"], f"{registry.url}/scale/base:again", str(tmp_path))
    assert again.digest == base_image.digest  # deterministic: same files, same image
    assert again.pushed_bytes == 0 and again.skipped_layers == len(again.layers)
    assert containers.folder_bytes(storage) == before  # not a byte stored: the manifest is the one it had
    weights = [layer for layer in base_image.layers if layer["content"].startswith("weights/")]
    assert weights and all(layer["size"] > 100_000 for layer in weights)


def test_the_shared_image_pins_the_base_image_in_lock_labels_and_manifests(shared, base_image) -> None:
    lock = json.loads(Path(shared.lock).read_text())
    assert lock["image"]["model_image"] == base_image.reference == shared.base_model_image
    dockerfile = Path(os.path.join(shared.context, "Dockerfile")).read_text()
    assert f'io.packager.base.image="{base_image.reference}"' in dockerfile
    kubernetes = Path(shared.manifests["kubernetes.yaml"]).read_text()
    assert f'reference: "{base_image.reference}"' in kubernetes and f"@{shared.digest}" in kubernetes
    assert f'"oci://{base_image.reference}"' in Path(shared.manifests["kserve.yaml"]).read_text()


def _fill_volume(client, reference: str, name: str) -> None:
    """What compose's `base` service does: Docker copies the image's /models into the empty named volume."""
    client.images.pull(reference)
    client.volumes.create(name)
    client.containers.run(reference, ["true"], volumes={name: {"bind": "/models", "mode": "rw"}}, remove=True)


def test_three_pods_share_one_read_only_base_volume_and_answer_as_peft(bases, shared, base_image, docker_client):
    expected = peft_answers(bases["base"], {name: bases[name] for name in ("sql", "chat")})
    assert expected["sql"] != expected["chat"], "the adapters must differ, or this test proves nothing"
    image = f"{shared.image.rsplit(':', 1)[0]}@{shared.digest}"
    docker_client.images.pull(image)
    volume = "scale-base"
    _fill_volume(docker_client, base_image.reference, volume)
    mount = {volume: {"bind": "/base", "mode": "ro"}}
    pods = [docker_client.containers.run(image, detach=True, network_mode="none", volumes=mount) for _ in range(PODS)]
    try:
        for pod in pods:
            containers.wait_healthy(pod)
        for pod in pods:
            for name in ("sql", "chat"):
                assert _completion(pod, name) == expected[name], (pod.name, name)
        listed = [docker_client.api.containers(filters={"id": pod.id}, size=True)[0] for pod in pods]
        extra = [entry.get("SizeRw", 0) for entry in listed]  # the engine leaves it out when nothing was written
        base_bytes = sum(layer["size"] for layer in base_image.layers if layer["content"] != "runnable base")
        print(f"\nbytes each pod adds: {extra} (the base, {base_bytes} B, is stored once in {volume})")
        assert all(size < 64_000 for size in extra), extra  # no copy of the base, and (no bytecode) next to nothing
    finally:
        for pod in pods:
            pod.remove(force=True)
        docker_client.volumes.get(volume).remove(force=True)


def test_a_pod_given_another_base_refuses_to_start(bases, shared, registry, docker_client, tmp_path) -> None:
    other = _push_base(bases["other-base"], f"{registry.url}/scale/other-base:1", str(tmp_path))
    volume = "scale-other-base"
    _fill_volume(docker_client, other.reference, volume)
    image = f"{shared.image.rsplit(':', 1)[0]}@{shared.digest}"
    docker_client.images.pull(image)
    try:
        container = docker_client.containers.run(
            image, detach=True, network_mode="none", volumes={volume: {"bind": "/base", "mode": "ro"}}
        )
        code, errors = containers.exit_and_errors(container)
    finally:
        docker_client.volumes.get(volume).remove(force=True)
    assert code != 0 and len(errors) == 1 and "is not the one in the lock" in errors[0], errors


def test_a_second_adapter_against_a_pushed_base_and_runtime_costs_about_its_own_bytes(
    bases, shared, runtime_image, registry, tmp_path
) -> None:
    storage = os.path.join(registry.root, "storage", "docker", "registry", "v2", "blobs")
    before = containers.folder_bytes(storage)
    # another repository: the runtime and base layers the registry holds are mounted, not sent again
    late = _package_shared(runtime_image, [("late", bases["late"])], f"{registry.url}/scale/late:1", str(tmp_path))
    stored = containers.folder_bytes(storage) - before
    lock = json.loads(Path(late.lock).read_text())
    adapter_bytes = sum(entry["size"] for entry in lock["adapters"]["late"]["files"])  # what the image carries
    print(f"\nsecond adapter: {late.pushed_bytes} B sent, {stored} B stored for a {adapter_bytes} B adapter")
    assert late.digest != shared.digest and late.base_model_image == shared.base_model_image
    assert stored <= 1.1 * adapter_bytes, (stored, adapter_bytes)
    assert late.pushed_bytes <= 1.1 * adapter_bytes, (late.pushed_bytes, adapter_bytes)  # what went over the wire


def test_a_base_split_to_fit_a_layer_cap_serves_as_peft(bases, runtime_image, registry, docker_client, tmp_path):
    """A registry capping layers at 300 kB: the base's weight file is split at tensor boundaries, the shared image
    checks the volume against the split files, and answers as PEFT does on the unsplit base."""
    cap = 300_000
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))
        split = _push_base(bases["base"], f"{registry.url}/scale/split-base:1", str(tmp_path / "b"), cap)
        image = _package_shared(runtime_image, [("sql", bases["sql"])], f"{registry.url}/scale/split:1", str(tmp_path))
    assert split.split == ["model.safetensors"] and all(layer["size"] <= cap + 10_000 for layer in split.layers[1:])
    lock = json.loads(Path(image.lock).read_text())
    assert any("-part-" in entry["path"] for entry in lock["base"]["files"])
    expected = peft_answers(bases["base"], {"sql": bases["sql"]})["sql"]
    volume = "scale-split-base"
    _fill_volume(docker_client, split.reference, volume)
    pulled = f"{image.image.rsplit(':', 1)[0]}@{image.digest}"
    docker_client.images.pull(pulled)
    pod = docker_client.containers.run(
        pulled, detach=True, network_mode="none", volumes={volume: {"bind": "/base", "mode": "ro"}}
    )
    try:
        containers.wait_healthy(pod)
        assert _completion(pod, "sql") == expected
    finally:
        pod.remove(force=True)
        docker_client.volumes.get(volume).remove(force=True)
