"""Render a self-contained build context: Dockerfile, .dockerignore, compose file, lock, runtime, model files.

`render_files` is pure (values in, file texts out); `write_context` does the I/O, into a staging folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2

from packager import __version__
from packager.artefact import WEIGHT_SUFFIXES
from packager.build import split_target
from packager.errors import UserInputError
from packager.runtime.config import BACKENDS, LOAD_QUANTIZATIONS
from packager.staging import staged_directory
from packager.template_filters import FILTERS, image_ref, safe_name

LAYOUTS = ("baked", "shared")
MODEL_DIR = "/models/merged"
BASE_MOUNT = "/base"
RUNTIME_PACKAGE = "packager_runtime"
# Files packager writes into the context get a fixed mtime, so their layers are byte-identical from one
# build to the next (and from one machine to another): unchanged runtime code is never pushed again.
FIXED_MTIME = 315532800  # 1980-01-01


@dataclass(frozen=True)
class AdapterInput:
    """One adapter of a shared-base image: the name a request's `model` field selects, and its folder."""

    name: str
    path: str
    sha256: str = ""


@dataclass(frozen=True)
class RenderRequest:
    layout: str
    base_image: str
    image: str
    lock: dict[str, Any] = field(repr=False)
    model_dir: str | None = None  # baked: the merged model folder
    adapters: tuple[AdapterInput, ...] = ()  # shared
    base_source: str = "/models/base"  # shared: default host folder in compose.yaml
    served_name: str = "model"
    port: int = 8000
    quantization: str = "none"  # the ArtefactSpec label: none, int8, int4, onnx-fp32, onnx-int8, bnb-nf4, ...
    backend: str = "transformers"  # how the runtime loads model_dir: transformers, quanto, onnx
    load_quantization: str = "none"  # GPU quantization the runtime applies at load time
    accuracy: str | None = None  # compact JSON of the artefact's accuracy report, for a label


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(resources.files("packager.templates")))
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def validate(request: RenderRequest) -> None:
    """Refuse bad layouts, names, ports and image references before anything is written."""
    if request.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {request.layout!r}; use one of {', '.join(LAYOUTS)}")
    image_ref(request.base_image)
    image_ref(request.image)
    safe_name(request.served_name)
    if not 1 <= request.port <= 65535:
        raise UserInputError(f"port {request.port} is out of range; use 1-65535")
    if request.backend not in BACKENDS or request.load_quantization not in LOAD_QUANTIZATIONS:
        raise UserInputError(
            f"unknown runtime backend {request.backend!r} or load quantization {request.load_quantization!r}"
        )
    if request.layout == "baked" and not request.model_dir:
        raise UserInputError("the baked layout needs a merged model folder")
    if request.layout == "shared" and not request.adapters:
        raise UserInputError("the shared layout needs at least one adapter; pass --adapter NAME=PATH")
    names = [safe_name(a.name) for a in request.adapters]
    if len(set(names)) != len(names):
        raise UserInputError(f"adapter names must be unique, got {', '.join(names)}")


def weight_files(model_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(model_dir) if n.endswith(WEIGHT_SUFFIXES))


def labels(request: RenderRequest) -> list[tuple[str, str]]:
    """OCI labels plus packager's own: what base, which adapter bytes, which layout; sorted for stable output."""
    base = request.lock.get("base", {})
    name, tag = split_target(request.image)
    adapter_sums = request.lock.get("adapter", {}).get("files", [])
    adapter_sha = ",".join(f"{a.name}={a.sha256}" for a in request.adapters) or next(
        (f["sha256"] for f in adapter_sums if f["path"].endswith((".safetensors", ".bin"))), ""
    )
    values = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.description": f"LLM adapter served by packager ({request.layout} layout)",
        "org.opencontainers.image.base.name": request.base_image,
        "io.packager.version": __version__,
        "io.packager.layout": request.layout,
        "io.packager.base.id": base.get("repo_id") or os.path.basename(str(base.get("path", "")).rstrip("/")),
        "io.packager.base.revision": base.get("commit") or base.get("revision") or "",
        "io.packager.adapter.sha256": adapter_sha,
        "io.packager.quantization": request.quantization,
        "io.packager.backend": request.backend,
        "io.packager.port": str(request.port),
    }
    if request.accuracy:
        values["io.packager.accuracy"] = request.accuracy
    if request.layout == "shared":
        values["io.packager.base-mount"] = BASE_MOUNT
    return sorted(values.items())


def template_context(request: RenderRequest, weights: list[str]) -> dict[str, Any]:
    return {
        "packager_version": __version__,
        "base_image": request.base_image,
        "image": request.image,
        "port": request.port,
        "model_dir": MODEL_DIR,
        "base_mount": BASE_MOUNT,
        "weight_files": weights,
        "adapters": request.adapters,
        "labels": labels(request),
        "service": safe_name(request.served_name),
        "base_source": request.base_source,
    }


def render_files(request: RenderRequest, weights: list[str]) -> dict[str, str]:
    """Every rendered text file of the build context, by name."""
    validate(request)
    env, context = _environment(), template_context(request, weights)
    files = {
        "Dockerfile": env.get_template(f"Dockerfile.{request.layout}.j2").render(context),
        ".dockerignore": env.get_template("dockerignore.j2").render(context),
    }
    if request.layout == "shared":
        files["compose.yaml"] = env.get_template("compose.shared.yaml.j2").render(context)
    return files


def runtime_config(request: RenderRequest) -> dict[str, Any]:
    """runtime.json: what the server in the image loads and how it checks the base."""
    config: dict[str, Any] = {
        "layout": request.layout,
        "port": request.port,
        "load_quantization": request.load_quantization,
    }
    if request.layout == "baked":
        config.update(model_dir=MODEL_DIR, served_name=request.served_name, backend=request.backend)
    else:
        adapters = {a.name: f"/adapters/{a.name}" for a in request.adapters}
        config.update(
            base_dir=BASE_MOUNT, adapters=adapters, lock="/opt/packager/packager.lock.json", verify_base="quick"
        )
    return config


def write_context(request: RenderRequest, output: str, force: bool = False) -> str:
    """Write the build context to `output` (atomically); model files are hard-linked when possible."""
    weights = weight_files(request.model_dir) if request.layout == "baked" else []
    files = render_files(request, weights)
    with staged_directory(output, force) as staging:
        for name, text in files.items():
            _write_text(os.path.join(staging, name), text)
        _write_json(os.path.join(staging, "runtime.json"), runtime_config(request))
        _write_json(os.path.join(staging, "packager.lock.json"), request.lock)
        _copy_runtime(os.path.join(staging, "runtime", RUNTIME_PACKAGE))
        if request.layout == "baked":
            _link_model(request.model_dir, weights, staging)
        for adapter in request.adapters:
            _link_tree(adapter.path, os.path.join(staging, "adapters", adapter.name))
        _fix_mtimes(staging)
    return os.path.abspath(output)


def _fix_mtimes(root: str) -> None:
    """Stamp what packager wrote (not the hard-linked model files, which are the user's) with FIXED_MTIME."""
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            path = os.path.join(folder, name)
            if os.stat(path).st_nlink == 1:
                os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def _link_model(model_dir: str, weights: list[str], staging: str) -> None:
    for name in os.listdir(model_dir):
        if name == "packager.lock.json" or not os.path.isfile(os.path.join(model_dir, name)):
            continue
        folder = "weights" if name in weights else "meta"
        link_or_copy(os.path.join(model_dir, name), os.path.join(staging, "model", folder, name))


def _link_tree(source: str, target: str) -> None:
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            link_or_copy(path, os.path.join(target, name))


def link_or_copy(source: str, target: str) -> None:
    """A hard link costs no disk; fall back to a copy across filesystems."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_runtime(target: str) -> None:
    source = resources.files("packager.runtime")
    os.makedirs(target, exist_ok=True)
    for entry in source.iterdir():
        if entry.name.endswith(".py"):
            with open(os.path.join(target, entry.name), "w") as f:
                f.write(entry.read_text())


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
