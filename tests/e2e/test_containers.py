"""End to end: package -> real image -> running server, and push/pull through real registries."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import torch

from packager.cli.main import main
from packager.demo import build_adapter, build_base
from packager.package import package
from packager.plan import DeploySpec
from tests.e2e import containers
from tests.requests import package_request

pytestmark = pytest.mark.e2e
PROMPT = "Question: what does packager do?"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, str]:
    """A demo base (hidden 128, 2 layers), a base with the same config but other weights, and two adapters."""
    root = tmp_path_factory.mktemp("demo")
    os.chmod(root, 0o755)  # the base is bind-mounted into a container that runs as a non-root user
    base = build_base(str(root / "base"), seed=0, hidden_size=128)
    other = build_base(str(root / "other-base"), seed=7, hidden_size=128)
    for folder, _, names in os.walk(root):  # safetensors writes 0600 files; the container runs as uid 10001
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)
    return {
        "base": base,
        "other-base": other,
        "sql": build_adapter(base, str(root / "sql"), seed=1, r=32),
        "chat": build_adapter(base, str(root / "chat"), seed=2, r=32),
    }


def _package(tmp_path, runtime_image: str, adapters, layout: str, tag: str, **kw):
    kw.setdefault("builder", "docker")  # the docker path; the oci fast path has its own tests
    kw.setdefault("runtime", "packager")  # packager's own server; test_vllm_images.py covers vLLM
    kw.setdefault("deploy", DeploySpec(("compose",)))  # the manifests beside the image (the CLI writes all)
    work = str(tmp_path / "work")
    request = package_request(tuple(adapters), layout, runtime_image, tag, work=work, quiet=True, **kw)
    return package(request, log=lambda _line: None)


def _greedy(model, tokenizer, prompt: str, n: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, do_sample=False, max_new_tokens=n, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def peft_answers(base: str, adapters: dict[str, str], n: int = 12) -> dict[str, str]:
    """PEFT's greedy completion of PROMPT for each adapter (name -> folder) on `base`: what a container must say."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    answers = {}
    for name, adapter in adapters.items():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
        answers[name] = _greedy(model, tokenizer, PROMPT, n)
    return answers


def _completion(container, model: str, n: int = 12) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0}
    return containers.call(container, "/v1/completions", body)["choices"][0]["text"]


def served_answers(docker_client, image: str, names, base_dir: str | None = None) -> dict[str, str]:
    """Each name's greedy completion of PROMPT from the image's container (the base mounted when given); the
    container and the image are removed after."""
    container = containers.start(docker_client, image, base_dir=base_dir)
    try:
        containers.wait_healthy(container)
        return {name: _completion(container, name) for name in names}
    finally:
        container.remove(force=True)
        docker_client.images.remove(image, force=True)


@pytest.fixture(scope="module")
def baked(demo, runtime_image, registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baked")
    tag = f"{registry.url}/demo/baked:1"
    report = _package(tmp, runtime_image, [("sql", demo["sql"])], "baked", tag, push=True)
    return report, tmp


def test_baked_container_answers_like_transformers(baked, docker_client) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report, tmp = baked
    merged = str(tmp / "work" / "merged")
    expected = _greedy(AutoModelForCausalLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged), PROMPT, 12)
    container = containers.start(docker_client, report.image)
    try:
        containers.wait_healthy(container)
        assert containers.call(container, "/v1/models")["data"][0]["id"] == "sql"
        assert _completion(container, "sql") == expected
        chat = containers.call(
            container,
            "/v1/chat/completions",
            {"model": "sql", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0},
        )
        assert chat["choices"][0]["message"]["role"] == "assistant"
    finally:
        container.remove(force=True)


def test_baked_report_and_labels(baked, docker_client) -> None:
    report, _ = baked
    assert report.digest.startswith("sha256:") and report.layout == "baked" and report.port == 8000
    assert report.adapters == ["sql"] and report.base_mount is None and os.path.isfile(report.lock)
    labels = docker_client.images.get(report.image).labels
    lock = json.loads(Path(report.lock).read_text())
    assert labels["io.packager.layout"] == "baked"
    adapter_file = next(f for f in lock["adapter"]["files"] if f["path"] == "adapter_model.safetensors")
    assert labels["io.packager.adapter.sha256"] == adapter_file["sha256"]
    assert {"resolve", "merge", "render", "build", "push"} <= set(report.timings)


def test_packager_sbom_reads_the_bom_the_image_holds(baked, capsys) -> None:
    report, _ = baked
    assert main(["sbom", report.image]) == 0
    assert capsys.readouterr().out == Path(report.context, "bom.cdx.json").read_text()
    assert main(["sbom", "127.0.0.1:1/no/such-image:1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_pulled_by_digest_image_holds_the_locked_model_files(baked, docker_client) -> None:
    report, _ = baked
    repository = report.image.rsplit(":", 1)[0]
    docker_client.images.remove(report.image, force=True)
    pulled = docker_client.images.pull(f"{repository}@{report.digest}")
    pulled.tag(report.image)  # later tests push it again
    lock = json.loads(Path(report.lock).read_text())
    container = docker_client.containers.create(pulled.id)
    try:
        stream, _ = container.get_archive("/models/merged")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
            found = {os.path.basename(m.name): archive.extractfile(m).read() for m in members}
    finally:
        container.remove()
    import hashlib

    weights = [f for f in lock["output"]["files"] if f["path"].endswith(".safetensors")]
    assert weights
    for entry in weights + [f for f in lock["output"]["files"] if f["path"] == "config.json"]:
        assert hashlib.sha256(found[entry["path"]]).hexdigest() == entry["sha256"], entry["path"]


def test_code_only_rebuild_reuses_weight_layers_and_pushes_no_weights(baked, docker_client, registry) -> None:
    from packager.builders.base import BuildRequest, PushRequest
    from packager.builders.docker import DockerBuilder

    report, _ = baked
    context = report.context
    with open(os.path.join(context, "runtime", "opt", "packager", "packager_runtime", "server.py"), "a") as f:
        f.write("\n# a runtime-only change\n")
    builder = DockerBuilder()
    rebuilt = builder.build(BuildRequest(context, f"{registry.url}/demo/baked:2"), log=lambda _l: None)
    before = [layer["digest"] for layer in report.layers]
    after = [layer.digest for layer in rebuilt.layers]
    weight_layers = [i for i, layer in enumerate(report.layers) if layer["content"].startswith("model/weights/")]
    assert weight_layers and all(before[i] == after[i] for i in weight_layers)
    assert before != after  # the runtime layer did change
    storage = os.path.join(registry.root, "storage", "docker", "registry", "v2", "blobs")  # not _uploads/
    size_before = containers.folder_bytes(storage)
    pushed = builder.push(PushRequest(rebuilt.tag, rebuilt.tag), log=lambda _l: None)
    grown = containers.folder_bytes(storage) - size_before
    smallest_weights = min(report.layers[i]["size"] for i in weight_layers)
    assert pushed.skipped_layers >= len(weight_layers)
    assert grown < smallest_weights, (grown, smallest_weights)


def test_the_openai_client_streams_from_packagers_own_server_in_its_container(baked, docker_client) -> None:
    """Over real HTTP: the container shares the host's network, its server bound to 127.0.0.1 only."""
    import httpx

    report, _ = baked
    container, url = containers.serve_on_host(docker_client, report.image)
    try:
        containers.wait_http(url, container, timeout=180)
        containers.check_openai_client(url, "sql", PROMPT, 12)
        assert "packager:generation_tokens_total" in httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        container.remove(force=True)


def test_a_locked_down_container_needs_its_api_key(baked, docker_client) -> None:
    """Read-only root filesystem (only /tmp writable), no capabilities, no privilege escalation, and the API key:
    the restricted pod the manifests render, here for real."""
    report, _ = baked
    container, url = containers.serve_on_host(docker_client, report.image, **containers.LOCKED_DOWN)
    try:
        containers.wait_http(url, container, timeout=180)
        containers.check_api_key(url, "sql")
    finally:
        container.remove(force=True)


def test_rebuild_without_build_cache_gives_the_same_weight_layers(baked) -> None:
    """The rebuild flake, made deterministic: a cache miss (here forced with nocache; in CI it came from an image
    removed by another test) re-ran every COPY, and the legacy builder stamped the directories it created with the
    build's clock, so an unchanged weight file got a new layer digest."""
    import time

    from packager.builders.base import BuildRequest
    from packager.builders.docker import DockerBuilder

    report, _ = baked
    time.sleep(1.1)  # layer tars keep whole seconds: make sure the clock has moved since the first build
    rebuilt = DockerBuilder().build(BuildRequest(report.context, "demo/uncached:1", nocache=True), log=lambda _l: None)
    weights = [i for i, layer in enumerate(report.layers) if layer["content"].startswith("model/weights/")]
    assert weights and [rebuilt.layers[i].digest for i in weights] == [report.layers[i]["digest"] for i in weights]


@pytest.fixture(scope="module")
def shared(demo, runtime_image, registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    tag = f"{registry.url}/demo/shared:1"
    report = _package(tmp, runtime_image, [("sql", demo["sql"]), ("chat", demo["chat"])], "shared", tag, push=True)
    return report, tmp


def test_shared_container_serves_each_adapter_like_peft(shared, demo, docker_client) -> None:
    report, _ = shared
    expected = peft_answers(demo["base"], {name: demo[name] for name in ("sql", "chat")})
    assert expected["sql"] != expected["chat"], "the adapters must differ, or this test proves nothing"
    container = containers.start(docker_client, report.image, base_dir=demo["base"])
    try:
        containers.wait_healthy(container)
        assert sorted(m["id"] for m in containers.call(container, "/v1/models")["data"]) == ["chat", "sql"]
        for name in ("sql", "chat"):
            assert _completion(container, name) == expected[name], name
        missing = containers.call(container, "/v1/completions", {"model": "nope", "prompt": "x", "max_tokens": 1})
        assert missing["status"] == 404
    finally:
        container.remove(force=True)
    assert report.base_mount == "/base" and sorted(report.adapters) == ["chat", "sql"]


def test_runtime_auto_serves_shared_ia3_adapters_with_packagers_server(demo, runtime_image, docker_client, tmp_path):
    """vLLM loads only LoRA unmerged: for (IA)3 adapters --runtime auto plans packager's server (it used to
    refuse), and the image answers for each adapter as PEFT does (issue 18)."""
    from peft import IA3Config

    from tests import families

    config = IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                       feedforward_modules=["down_proj"])  # fmt: skip
    adapters = [
        (name, families.save_task_adapter(demo["base"], str(tmp_path / name), "CAUSAL_LM", config, seed=seed))
        for name, seed in (("ia3-a", 1), ("ia3-b", 2))
    ]
    report = _package(tmp_path, runtime_image, adapters, "shared", "demo/ia3:1", runtime="auto")
    assert containers.runtime_json(report.context).get("engine", "packager") == "packager"  # vLLM: "vllm"
    expected = peft_answers(demo["base"], dict(adapters))
    assert expected["ia3-a"] != expected["ia3-b"], "the adapters must differ, or this test proves nothing"
    assert served_answers(docker_client, report.image, expected, demo["base"]) == expected


@pytest.mark.parametrize("mount", ["other-base", None])
def test_shared_container_refuses_wrong_or_missing_base(mount, shared, demo, docker_client) -> None:
    report, _ = shared
    code, logs, errors = containers.run_to_exit(docker_client, report.image, demo[mount] if mount else None)
    assert code != 0 and len(errors) == 1 and "Traceback" not in logs, logs
    assert ("not the one" in errors[0]) if mount else ("no base model mounted" in errors[0])


def test_second_adapter_repackage_pushes_about_the_adapter_bytes(
    shared, demo, runtime_image, registry, tmp_path
) -> None:
    storage = os.path.join(registry.root, "storage", "docker", "registry", "v2", "blobs")  # not _uploads/
    size_before = containers.folder_bytes(storage)
    report = _package(
        tmp_path, runtime_image, [("chat", demo["chat"])], "shared", f"{registry.url}/demo/chat:1", push=True
    )
    grown = containers.folder_bytes(storage) - size_before
    adapter_bytes = containers.folder_bytes(demo["chat"])
    print(
        f"shared re-package: registry grew {grown} bytes for a {adapter_bytes}-byte adapter "
        f"({grown / adapter_bytes:.3f}x; push report: {report.pushed_bytes} bytes)"
    )
    assert report.digest and grown <= 1.1 * adapter_bytes, (grown, adapter_bytes)


def test_auth_registry_needs_credentials_and_never_stores_them(baked, auth_registry, docker_client, capsys) -> None:
    report, _ = baked
    target = f"{auth_registry.url}/demo/baked"
    code = main(["push", "--image", report.image, "--registry", target, "--tag", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "refused the credentials" in err[-1]

    import sys

    stdin = sys.stdin
    sys.stdin = io.StringIO(auth_registry.password + "\n")
    try:
        code = main(
            [
                "push",
                "--image",
                report.image,
                "--registry",
                target,
                "--tag",
                "1",
                "--username",
                auth_registry.username,
                "--password-stdin",
            ]
        )
    finally:
        sys.stdin = stdin
    assert code == 0 and "pushed" in capsys.readouterr().out
    saved = b"".join(docker_client.images.get(report.image).save())
    assert auth_registry.password.encode() not in saved
    context_bytes = b"".join(Path(d, n).read_bytes() for d, _, ns in os.walk(report.context) for n in ns)
    assert auth_registry.password.encode() not in context_bytes


def test_unreachable_engine_is_one_line(tmp_path, capsys, monkeypatch, demo) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    code = main(
        ["package", "--adapter", demo["sql"], "--layout", "baked", "--base-image", "x:1", "--work", str(tmp_path)]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and "cannot reach the Docker engine" in err[0]


def test_pushing_a_missing_image_is_one_line(registry, capsys) -> None:
    code = main(["push", "--image", "never-built:1", "--registry", f"{registry.url}/demo/x"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "no local image 'never-built:1'" in err[0]


def test_registry_down_is_one_line_and_not_success(baked, capsys) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report, _ = baked
    code = main(["push", "--image", report.image, "--registry", f"127.0.0.1:{port}/demo/x", "--tag", "1"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "unreachable" in errors[0] and "pushed" not in captured.out


def test_unknown_layout_is_refused(demo, capsys) -> None:
    code = main(["package", "--adapter", demo["sql"], "--layout", "fat", "--base-image", "x:1"])
    assert code == 2 and "invalid choice: 'fat'" in capsys.readouterr().err


def test_compose_file_mounts_the_base_read_only(shared) -> None:
    report, _ = shared
    compose = Path(report.manifests["compose.yaml"]).read_text()
    assert 'target: "/base"' in compose and "read_only: true" in compose
    assert Path(report.context, "compose.yaml").exists() is False  # manifests do not go into the build context


@pytest.fixture()
def fresh_registry(engine, tmp_path):
    """A registry that has seen no blob yet (a registry reuses blobs it already holds, compressed or not)."""
    from scripts import local_engine

    started = local_engine.start_registry(str(tmp_path / "fresh-registry"))
    yield started
    local_engine.stop_registry(started)


def test_buildah_builds_and_pushes_an_image_docker_can_pull(baked, fresh_registry, docker_client) -> None:
    """The daemonless path builds the same context into the same layers and pushes an OCI image."""
    import urllib.request

    from packager.builders.base import BuildRequest, PushRequest
    from packager.builders.buildah import BuildahBuilder

    report, _ = baked
    registry = fresh_registry
    builder = BuildahBuilder()
    tag = f"{registry.url}/demo/buildah:1"
    built = builder.build(BuildRequest(report.context, tag), log=lambda _l: None)
    pushed = builder.push(PushRequest(tag, tag), log=lambda _l: None)
    assert pushed.digest.startswith("sha256:") and len(built.layers) == len(report.layers)
    request = urllib.request.Request(
        f"http://{registry.url}/v2/demo/buildah/manifests/{pushed.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    manifest = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert len(manifest["layers"]) == len(report.layers)
    pulled = docker_client.images.pull(f"{registry.url}/demo/buildah@{pushed.digest}")
    assert pulled.labels["io.packager.layout"] == "baked"


def test_oci_builder_pushes_uncompressed_layers_that_run(baked, fresh_registry, docker_client) -> None:
    """The fast path: layers streamed from the context as plain tars; docker pulls and runs the result."""
    import urllib.request

    from packager.builders.base import BuildRequest, PushRequest
    from packager.builders.oci import OciBuilder

    report, _ = baked
    builder = OciBuilder()
    tag = f"{fresh_registry.url}/demo/oci:1"
    built = builder.build(BuildRequest(report.context, tag), log=lambda _l: None)
    pushed = builder.push(PushRequest(tag, tag), log=lambda _l: None)
    request = urllib.request.Request(
        f"http://{fresh_registry.url}/v2/demo/oci/manifests/{pushed.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    manifest = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert [layer["digest"] for layer in manifest["layers"]] == [layer.digest for layer in built.layers]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}
    again = builder.push(PushRequest(tag, tag), log=lambda _l: None)
    assert again.pushed_bytes == 0 and again.digest == pushed.digest  # nothing re-sent, same image
    pulled = docker_client.images.pull(f"{fresh_registry.url}/demo/oci@{pushed.digest}")
    container = containers.start(docker_client, pulled.id)
    try:
        containers.wait_healthy(container)
        assert containers.call(container, "/v1/models")["data"][0]["id"] == "sql"
        code, output = container.exec_run(["sha256sum", "/models/merged/model.safetensors"])
        lock = json.loads(Path(report.lock).read_text())
        expected = next(f["sha256"] for f in lock["output"]["files"] if f["path"] == "model.safetensors")
        assert code == 0 and output.decode().split()[0] == expected
        assert container.attrs["Config"]["User"] == "10001:10001"
    finally:
        container.remove(force=True)
