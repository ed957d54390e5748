"""`packager package`: resolve -> merge (baked) -> render -> build -> push, with one report at the end."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from packager.artefact import ArtefactReport, ArtefactSpec, artefact_spec, load_time_note, make_artefact
from packager.build import BuildRequest, BuildResult, PushRequest, PushResult, get_builder, registry_host, split_target
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.render import BASE_MOUNT, LAYOUTS, AdapterInput, RenderRequest, write_context
from packager.resolve import Resolved, ResolveRequest, resolve
from packager.run_merge import run_merge

DEFAULT_MAX_LAYER_BYTES = 2 * 10**9


@dataclass(frozen=True)
class PackageRequest:
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


@dataclass(frozen=True)
class PackageReport:
    image: str
    image_id: str
    digest: str | None
    layout: str
    context: str
    lock: str
    layers: list[dict[str, Any]]
    size: int
    port: int
    base_mount: str | None
    adapters: list[str]
    timings: dict[str, float]
    pushed_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    artefact: dict[str, Any] | None = None  # the quantized/exported model's report (size, accuracy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose_builder(requested: str, push: bool) -> str:
    """auto: `oci` when pushing (uncompressed layers straight from the context: the fast path), else `docker`
    (a local image you can run)."""
    if requested != "auto":
        return requested
    return "oci" if push else "docker"


def package(request: PackageRequest, log=print) -> PackageReport:
    """Run every step; on failure nothing is reported as built or pushed."""
    if request.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {request.layout!r}; use one of {', '.join(LAYOUTS)}")
    if request.layout == "baked" and len(request.adapters) != 1:
        raise UserInputError("the baked layout serves exactly one adapter; use --layout shared for several")
    spec = request.artefact
    artefact_spec(spec.quantize, spec.export, request.layout, spec.granularity, spec.onnx_atol)  # refuse bad combos
    builder = get_builder(choose_builder(request.builder, request.push))  # fails fast without an engine
    timings: dict[str, float] = {}
    os.makedirs(request.work, exist_ok=True)
    render_request, notes, artefact = _prepare(request, timings, log)
    started = time.monotonic()
    context = write_context(render_request, os.path.join(request.work, "context"), force=True)
    timings["render"] = time.monotonic() - started
    built = builder.build(BuildRequest(context, request.tag), log=_quiet_log(request, log))
    timings["build"] = built.seconds
    pushed = _push(builder, request, log) if request.push else None
    if pushed:
        timings["push"] = pushed.seconds
    report = _report(request, render_request, context, built, pushed, timings, notes)
    return dataclasses.replace(report, artefact=artefact.to_dict() if artefact else None)


Prepared = tuple[RenderRequest, list[str], ArtefactReport | None]


def _prepare(request: PackageRequest, timings: dict[str, float], log) -> Prepared:
    started = time.monotonic()
    resolved = [(name, resolve(_resolve_request(request, path))) for name, path in request.adapters]
    timings["resolve"] = time.monotonic() - started
    if request.artefact.export == "onnx":  # before the merge: the base decides whether it can be exported
        from packager.onnx_export import check_exportable

        check_exportable(resolved[0][1].plan.base.fingerprint.model_type)
    if request.layout == "baked":
        render, notes = _prepare_baked(request, *resolved[0], timings)
        return _with_artefact(request, render, notes, timings, _quiet_log(request, log))
    render = _prepare_shared(request, resolved)
    render = dataclasses.replace(
        render, quantization=request.artefact.label, load_quantization=request.artefact.load_quantization
    )
    notes = _unreadable_base_note(resolved[0][1].plan.base.path) + load_time_note(request.artefact)
    return render, notes, None


def _with_artefact(request: PackageRequest, render: RenderRequest, notes: list[str], timings, log) -> Prepared:
    """Quantize or export the merged model when asked; the image then serves that artefact."""
    spec = request.artefact
    render = dataclasses.replace(
        render, quantization=spec.label, backend=spec.backend, load_quantization=spec.load_quantization
    )
    if not spec.transforms:
        return render, notes + load_time_note(spec), None
    output = os.path.join(request.work, "artefact")
    started = time.monotonic()
    report = make_artefact(render.model_dir or "", spec, output, force=True, log=log)
    timings["export" if spec.backend == "onnx" else "quantize"] = time.monotonic() - started
    lock = {**render.lock, "artefact": report.to_dict()}
    render = dataclasses.replace(render, model_dir=output, lock=lock, accuracy=report.label())
    return render, notes, report


def _resolve_request(request: PackageRequest, path: str) -> ResolveRequest:
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


def _prepare_baked(
    request: PackageRequest, name: str, resolved: Resolved, timings: dict[str, float]
) -> tuple[RenderRequest, list[str]]:
    merged_dir = os.path.join(request.work, "merged")
    started = time.monotonic()
    outcome = run_merge(
        _resolve_request(request, resolved.adapter.path),
        merged_dir,
        force=True,
        verify=request.verify,
        max_shard_bytes=DEFAULT_MAX_LAYER_BYTES,
        quiet=request.quiet,
    )
    timings["merge"] = time.monotonic() - started
    with open(os.path.join(merged_dir, "packager.lock.json")) as f:
        lock = json.load(f)
    notes = list(outcome.result.plan.merge.notes)
    if outcome.parity:
        notes.append(outcome.parity.summary())
    render = RenderRequest("baked", request.base_image, request.tag, lock, model_dir=merged_dir, served_name=name)
    return render, notes


def _prepare_shared(request: PackageRequest, resolved: list[tuple[str, Resolved]]) -> RenderRequest:
    from packager.runtime.fingerprint import sample_sha256

    first = resolved[0][1].plan
    for name, item in resolved:
        _check_servable_unmerged(name, item)
        if item.plan.base.path != first.base.path:
            raise IncompatibleAdapterError(
                f"adapter {name} resolves to base {item.plan.base.path}, not {first.base.path}; a shared-base image "
                "serves adapters of one base: pass --base, or package them separately"
            )
    lock = first.lock()
    lock["base"]["files"] = [_with_hashes(first.base.path, entry, sample_sha256) for entry in lock["base"]["files"]]
    lock["adapters"] = {name: dataclasses.asdict(item.plan.adapter) for name, item in resolved}
    adapters = tuple(AdapterInput(name, item.adapter.path, _weights_sha(item)) for name, item in resolved)
    return RenderRequest(
        "shared",
        request.base_image,
        request.tag,
        lock,
        adapters=adapters,
        base_source=first.base.path,
        served_name=_service_name(request.tag),
    )


def _unreadable_base_note(base_path: str) -> list[str]:
    """The image runs as uid 10001: a base with owner-only files (safetensors writes 0600) cannot be read."""
    private = [n for n in sorted(os.listdir(base_path)) if not os.stat(os.path.join(base_path, n)).st_mode & 0o004]
    if not private:
        return []
    return [
        f"base files {', '.join(private[:3])} are not readable by others; the container (uid 10001) "
        f"needs them readable: chmod -R a+rX {base_path}"
    ]


def _with_hashes(base_path: str, entry: dict[str, Any], sample) -> dict[str, Any]:
    from packager.hashing import sha256_file

    path = os.path.join(base_path, entry["path"])
    return {**entry, "sha256": entry["sha256"] or sha256_file(path), "sample_sha256": sample(path)}


def _weights_sha(item: Resolved) -> str:
    weights = os.path.basename(item.adapter.weights_file)
    return next((f.sha256 or "" for f in item.plan.adapter.files if f.path == weights), "")


def _check_servable_unmerged(name: str, item: Resolved) -> None:
    if "vocab_size" in item.plan.merge.config_updates:
        raise IncompatibleAdapterError(
            f"adapter {name} extends the vocabulary, so it cannot share an unmodified base; use --layout baked"
        )


def _service_name(tag: str) -> str:
    repository, _ = split_target(tag)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repository.rsplit("/", 1)[-1]) or "packager"


def _push(builder, request: PackageRequest, log) -> PushResult:
    if registry_host(request.tag) == "docker.io":
        raise UserInputError(f"--push needs a tag that names a registry, e.g. 127.0.0.1:5000/{request.tag}")
    push = PushRequest(request.tag, request.tag, request.username, request.password)
    return builder.push(push, _quiet_log(request, log))


def _quiet_log(request: PackageRequest, log):
    return (lambda _line: None) if request.quiet else log


def describe_layers(context: str, built: BuildResult) -> list[dict[str, Any]]:
    """Layers with what they hold: our Dockerfiles make one layer per COPY, after the base image's layers."""
    with open(os.path.join(context, "Dockerfile")) as f:
        copies = [json.loads(line.split(" ", 2)[2])[:-1] for line in f if line.startswith("COPY ")]
    layers = [dataclasses.asdict(layer) for layer in built.layers]
    base_count = len(layers) - len(copies)
    for i, layer in enumerate(layers):
        layer["content"] = "base image" if i < base_count else " ".join(copies[i - base_count])
    return layers


def _report(
    request: PackageRequest,
    render: RenderRequest,
    context: str,
    built: BuildResult,
    pushed: PushResult | None,
    timings: dict[str, float],
    notes: list[str],
) -> PackageReport:
    """The machine-readable outcome; `image_id`, `layers` and `digest` come from the engine and registry."""
    adapters = [a.name for a in render.adapters] or [render.served_name]
    return PackageReport(
        image=request.tag,
        image_id=built.image_id,
        digest=pushed.digest if pushed else None,
        layout=request.layout,
        context=context,
        lock=os.path.join(context, "packager.lock.json"),
        layers=describe_layers(context, built),
        size=built.size,
        port=render.port,
        base_mount=BASE_MOUNT if request.layout == "shared" else None,
        adapters=adapters,
        timings=timings,
        pushed_bytes=pushed.pushed_bytes if pushed else None,
        notes=notes,
    )
