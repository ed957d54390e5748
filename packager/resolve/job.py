"""The whole job's plan, built once: every adapter resolved and checked, the merge (or none), the artefact, and
the image, with the runtime config the image will load. Later steps take this plan and never resolve again."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from packager.artefact.spec import ArtefactSpec, artefact_spec
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.image.filters import image_ref
from packager.image.paths import ADAPTERS_DIR, BASE_MOUNT, LOCK_IN_IMAGE, MODEL_DIR
from packager.image.reference import registry_host, split_target
from packager.io.hashing import sha256_file
from packager.plan import BaseSpec, FileEntry, ImagePlan, PackagePlan, ServedAdapter
from packager.resolve.resolver import Resolved, ResolveRequest, resolve
from packager.runtime.config import RuntimeConfig
from packager.runtime.fingerprint import sample_sha256

LAYOUTS = ("baked", "shared")
BUILDERS = ("auto", "docker", "oci", "buildah")


@dataclass(frozen=True)
class PackageRequest:
    """What the user asked `package` (or `render`) for; every field maps to a CLI flag."""

    adapters: tuple[tuple[str, str], ...]  # (name, path)
    layout: str
    base_image: str
    tag: str
    base: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    allow_pickle: bool = False
    work: str = "packager-build"
    builder: str = "auto"
    push: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    quiet: bool = False
    artefact: ArtefactSpec = field(default_factory=ArtefactSpec)
    qlora: bool = False
    qlora_merge: str | None = None
    port: int = 8000


@dataclass(frozen=True)
class Job:
    """The frozen plan, plus the resolved inputs the merge reads through (one per adapter, in order)."""

    plan: PackagePlan
    inputs: tuple[Resolved, ...]


def choose_builder(requested: str, push: bool) -> str:
    """auto: `oci` when pushing (uncompressed layers straight from the context: the fast path), else `docker`
    (a local image you can run)."""
    if requested != "auto":
        return requested
    return "oci" if push else "docker"


def plan_package(request: PackageRequest) -> Job:
    """Check the request, resolve every adapter once, and freeze the whole job into one plan."""
    _check_request(request)
    inputs = tuple(resolve(resolve_request(request, path)) for _, path in request.adapters)
    if request.artefact.export == "onnx":  # before the merge: the base decides whether it can be exported
        from packager.artefact.onnx_export import check_exportable

        check_exportable(inputs[0].plan.base.fingerprint.model_type)
    if request.layout == "baked":
        return Job(_baked_plan(request, inputs[0]), inputs)
    return Job(_shared_plan(request, inputs), inputs)


def _check_request(request: PackageRequest) -> None:
    if request.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {request.layout!r}; use one of {', '.join(LAYOUTS)}")
    if request.layout == "baked" and len(request.adapters) != 1:
        raise UserInputError("the baked layout serves exactly one adapter; use --layout shared for several")
    if request.builder not in BUILDERS:
        raise UserInputError(f"unknown builder {request.builder!r}; use one of {', '.join(BUILDERS)}")
    image_ref(request.base_image)  # before any heavy work: a bad reference fails in a second, not after a merge
    image_ref(request.tag)
    if not 1 <= request.port <= 65535:
        raise UserInputError(f"port {request.port} is out of range; use 1-65535")
    if request.push and registry_host(request.tag) == "docker.io":
        raise UserInputError(f"--push needs a tag that names a registry, e.g. 127.0.0.1:5000/{request.tag}")
    spec = request.artefact
    artefact_spec(spec.quantize, spec.export, request.layout, spec.granularity, spec.onnx_atol)  # bad combos


def resolve_request(request: PackageRequest, path: str) -> ResolveRequest:
    """The resolve step's request for one adapter (base weights are hashed later, by the merge or the plan)."""
    return ResolveRequest(
        path,
        request.base,
        request.revision,
        None,
        request.dtype,
        request.allow_pickle,
        hash_base=False,
        qlora=request.qlora,
        qlora_merge=request.qlora_merge,
    )


def _image(request: PackageRequest, layout: str, runtime: RuntimeConfig, base_source: str = "") -> ImagePlan:
    builder = choose_builder(request.builder, request.push)
    return ImagePlan(layout, request.base_image, request.tag, builder, request.push, runtime, base_source)


def _baked_plan(request: PackageRequest, resolved: Resolved) -> PackagePlan:
    spec = request.artefact
    runtime = RuntimeConfig(
        "baked",
        request.port,
        model_dir=MODEL_DIR,
        served_name=request.adapters[0][0],
        backend=spec.backend,
        load_quantization=spec.load_quantization,
    )
    image = _image(request, "baked", runtime, "/models/base")
    return PackagePlan(resolved.plan.adapter, resolved.plan.base, resolved.plan.merge, artefact=spec, image=image)


def _shared_plan(request: PackageRequest, inputs: tuple[Resolved, ...]) -> PackagePlan:
    first = inputs[0].plan
    named = [(name, item) for (name, _), item in zip(request.adapters, inputs, strict=True)]
    for name, item in named:
        _check_servable_unmerged(name, item, first.base.path)
    served = tuple(ServedAdapter(name, item.plan.adapter) for name, item in named)
    runtime = RuntimeConfig(
        "shared",
        request.port,
        served_name=service_name(request.tag),
        base_dir=BASE_MOUNT,
        adapters=tuple((s.name, f"{ADAPTERS_DIR}/{s.name}") for s in served),
        lock=LOCK_IN_IMAGE,
        load_quantization=request.artefact.load_quantization,
    )
    image = _image(request, "shared", runtime, first.base.path)
    base = _with_sampled_hashes(first.base)
    return PackagePlan(first.adapter, base, None, artefact=request.artefact, served=served, image=image)


def _check_servable_unmerged(name: str, item: Resolved, base_path: str) -> None:
    if item.plan.base.path != base_path:
        raise IncompatibleAdapterError(
            f"adapter {name} resolves to base {item.plan.base.path}, not {base_path}; a shared-base image "
            "serves adapters of one base: pass --base, or package them separately"
        )
    if item.plan.merge is not None and "vocab_size" in item.plan.merge.config_updates:
        raise IncompatibleAdapterError(
            f"adapter {name} extends the vocabulary, so it cannot share an unmodified base; use --layout baked"
        )


def _with_sampled_hashes(base: BaseSpec) -> BaseSpec:
    """Every base file's sha256 and sampled fingerprint: what the image's start-up check compares."""
    files = tuple(_sampled(base.path, entry) for entry in base.files)
    return BaseSpec(**{**base.__dict__, "files": files})


def _sampled(folder: str, entry: FileEntry) -> FileEntry:
    path = os.path.join(folder, entry.path)
    return FileEntry(entry.path, entry.size, entry.sha256 or sha256_file(path), sample_sha256(path))


def service_name(tag: str) -> str:
    """The compose service (and shared image's) name: the tag's last repository component."""
    repository, _ = split_target(tag)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repository.rsplit("/", 1)[-1]) or "packager"
