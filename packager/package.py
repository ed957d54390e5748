"""`packager package`: plan (resolve once) -> merge (baked) -> artefact -> render -> build -> push.

`render_job` runs the steps up to a written build context (`packager render` stops there); `package` then
builds and pushes it. Each step takes the frozen plan and what the steps before it returned.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packager.accuracy.report import ArtefactReport
from packager.artefact.spec import load_time_note
from packager.builders import AUTO_LOCAL, get_builder
from packager.builders.base import Builder, BuildRequest, BuildResult, PushRequest, PushResult
from packager.deploy.render import Signature, write_manifests
from packager.errors import UserInputError
from packager.image.context import Context, ModelFiles, write_context
from packager.image.dockerfile import parse_dockerfile
from packager.image.paths import BASE_MOUNT
from packager.image.reference import split_target
from packager.merge.run import MergeOutcome, merge_resolved
from packager.merge.stream import hash_outputs
from packager.plan import PackagePlan
from packager.planning.job import Job, PackageRequest, plan_package
from packager.resolve.pins import pinned_files, sampled_base
from packager.signing.attach import SignReport

__all__ = ["PackageReport", "PackageRequest", "Rendered", "package", "render_job"]

DEFAULT_MAX_LAYER_BYTES = 2 * 10**9
Log = Callable[[str], None]


@dataclass(frozen=True)
class Rendered:
    """What the steps up to the build context produced: the plan (base hashes filled in), the context, notes."""

    plan: PackagePlan
    context: Context
    notes: tuple[str, ...]
    artefact: ArtefactReport | None
    timings: dict[str, float] = field(default_factory=dict)
    manifests: dict[str, str] = field(default_factory=dict)  # name -> path, the image named by its tag


@dataclass(frozen=True)
class PackageReport:
    """What `package` built and pushed: image, digest, layers, timings; `to_dict` is the JSON report."""

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
    builder: str = AUTO_LOCAL
    reproducible: bool = False  # same inputs give the same digest (oci builder)
    manifests: dict[str, str] = field(default_factory=dict)  # name -> path; the image pinned by digest once pushed
    base_model_image: str | None = None  # shared: the base-model image the manifests mount
    signature: dict[str, Any] | None = None  # --sign-key: the signature files and the referrers attached

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (`--report`, `--json`)."""
        return dataclasses.asdict(self)


def package(request: PackageRequest, log: Log = print) -> PackageReport:
    """Run every step; on failure nothing is reported as built or pushed."""
    started = time.monotonic()
    job = plan_package(request)  # the request checked, the whole job planned: no weight read yet
    builder = get_builder(job.plan.image.builder)  # before the merge: no engine fails in a second
    check_base_image(job.plan)  # before the merge: the wrong runtime image fails in a second
    rendered = render_job(job, request, log, {"resolve": time.monotonic() - started})
    built = build_context(builder, rendered.context.path, request.image.tag, _quiet_log(request, log))
    pushed = push_image(builder, request.image.tag, request, _quiet_log(request, log)) if request.image.push else None
    signed = None
    if pushed is not None and request.image.sign_key:
        signed = _timed(rendered.timings, "sign", lambda: sign_image(rendered, pushed, request))
    if pushed is not None:  # the manifests now name the image by its digest: what runs is what was pushed
        reference = f"{split_target(request.image.tag)[0]}@{pushed.digest}"
        mounted = Signature(signed.signature, signed.public_key) if signed else None
        manifests = write_manifests(rendered.plan, reference, os.path.join(request.work, "deploy"), mounted)
        rendered = dataclasses.replace(rendered, manifests=manifests)
    return _report(rendered, built, pushed, signed)


def render_job(job: Job, request: PackageRequest, log: Log = print, timings: dict | None = None) -> Rendered:
    """Merge (baked), make the artefact (if asked) and write the build context into `request.work`."""
    timings = dict(timings or {})
    os.makedirs(request.work, exist_ok=True)
    plan, notes, model, merged, artefact = job.plan, _base_notes(job.plan), None, (), None
    if plan.merge is not None:
        outcome = _timed(timings, "merge", lambda: _merge(job, request))
        plan = dataclasses.replace(plan, base=outcome.result.plan.base)  # the base, now pinned by sha256
        merged = outcome.result.files
        model = ModelFiles(outcome.output, merged)
        notes += _merge_notes(outcome)
        artefact = outcome.artefact  # a compressed-tensors checkpoint, quantized as the merge streamed
    else:  # nothing merged: the base ships as it is (baked) or is mounted (shared); pinned now, in parallel
        plan = _timed(timings, "pin", lambda: dataclasses.replace(plan, base=sampled_base(plan.base)))
        if plan.image is not None and plan.image.layout == "baked":
            model = ModelFiles(plan.base.path, plan.base.files, owned=False)
    if model and plan.artefact.transforms:  # an ONNX export of the merge
        artefact = _artefact(plan, model, request, timings, _quiet_log(request, log))
        model = ModelFiles(artefact.path, hash_outputs(artefact.path))
    if plan.image.base_to_make:
        plan, artefact = _timed(timings, "quantize", lambda: _quantized_base(job, plan, request, log))
        notes += _adapter_notes(artefact)
    context = _timed(
        timings,
        "render",
        lambda: write_context(
            plan,
            os.path.join(request.work, "context"),
            model,
            merged,
            artefact.to_dict() if artefact else None,
            artefact.label() if artefact else None,
            force=True,
        ),
    )
    manifests = write_manifests(plan, plan.image.tag, os.path.join(request.work, "deploy")) if plan.image else {}
    return Rendered(plan, context, tuple(notes + load_time_note(plan.artefact)), artefact, timings, manifests)


def check_base_image(plan: PackagePlan) -> None:
    """Refuse a --base-image that carries another runtime than the plan's engine (its io.packager.runtime label;
    an image without one is packager's own runtime image)."""
    from packager.builders.docker import image_labels

    image = plan.image
    labels = image_labels(image.base_image) if image else None
    if image is None or labels is None:
        return  # no engine or no such image: the build says so in its own words
    found = labels.get("io.packager.runtime", "packager")
    if found != image.engine:
        raise UserInputError(
            f"--base-image {image.base_image} carries the {found} runtime, but this image runs {image.engine} "
            f"({image.engine_reason}); build one with `packager base-image --runtime {image.engine}`, or pass "
            f"--runtime {found}"
        )


def _merge(job: Job, request: PackageRequest) -> MergeOutcome:
    return merge_resolved(
        job.inputs[0],
        os.path.join(request.work, "merged"),
        force=True,
        verify=request.verify,
        max_shard_bytes=DEFAULT_MAX_LAYER_BYTES,
        quiet=request.quiet,
        gate=request.artefact.gate,
    )


def _merge_notes(outcome: MergeOutcome) -> list[str]:
    plan = outcome.result.plan
    notes = list(plan.merge.notes) if plan.merge else []
    notes += list(plan.quantize.notes) if plan.quantize else []
    return notes + ([outcome.parity.summary()] if outcome.parity else [])


def _artefact(plan: PackagePlan, model: ModelFiles, request, timings, log: Log) -> ArtefactReport:
    """Export the merged model to ONNX; the image then serves that artefact."""
    from packager.artefact.make import make_artefact

    output = os.path.join(request.work, "artefact")
    return _timed(timings, "export", lambda: make_artefact(model.folder, plan.artefact, output, True, log, plan.task))


def _quantized_base(job: Job, plan: PackagePlan, request: PackageRequest, log: Log) -> tuple[PackagePlan, Any]:
    """Shared layout, --quantize: the base quantized into WORK/base-SCHEME (the folder to mount at /base), pinned
    in the plan, measured against the 16-bit base alone and under each adapter."""
    from packager.merge.merged_source import measure_adapter_on
    from packager.quantize.base import quantize_base

    quantize, target, base = plan.quantize, plan.image.base_to_make, plan.base
    report = quantize_base(base.path, base.label_id, quantize, target, plan.artefact.gate, _quiet_log(request, log))
    made = pinned_files(target)
    pairs = zip(plan.served, job.inputs, strict=True)
    drift = {served.name: measure_adapter_on(target, quantize, item).to_dict() for served, item in pairs}
    report = dataclasses.replace(report, details={**report.details, "adapters": drift})
    base = dataclasses.replace(plan.base, files=made)  # what pods mount and the start-up check verifies
    return dataclasses.replace(plan, base=base), report


def _adapter_notes(report: ArtefactReport) -> list[str]:
    kind = report.kind.removeprefix("compressed-tensors-")
    return [
        f"adapter {name} on the {kind} base, against the 16-bit base: perplexity "
        f"{acc['perplexity_change']:+.2%}, top-1 {acc['top1_agreement']:.1%}, KL {acc['kl_divergence']:.3g}"
        for name, acc in report.details["adapters"].items()
    ]


def _timed(timings: dict[str, float], name: str, step: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = step()
    timings[name] = time.monotonic() - started
    return result


def _base_notes(plan: PackagePlan) -> list[str]:
    """The shared image runs as uid 10001: a base with owner-only files (safetensors writes 0600) is unreadable."""
    if plan.image is None or plan.image.layout != "shared" or plan.image.model_image:
        return []  # a base-model image's files are 0644 whatever the folder's were
    base_path = plan.base.path
    private = [e.path for e in plan.base.files if not os.stat(os.path.join(base_path, e.path)).st_mode & 0o004]
    if not private:
        return []
    return [
        f"base files {', '.join(private[:3])} are not readable by others; the container (uid 10001) "
        f"needs them readable: chmod -R a+rX {base_path}"
    ]


def build_context(builder: Builder, context: str, tag: str, log: Log) -> BuildResult:
    """Build a written context into `tag` with `builder`."""
    return builder.build(BuildRequest(context, tag), log=log)


def push_image(builder: Builder, tag: str, request: PackageRequest, log: Log) -> PushResult:
    """Push the built `tag` to the registry it names."""
    return builder.push(PushRequest(tag, tag, request.image.username, request.image.password), log)


def sign_image(rendered: Rendered, pushed: PushResult, request: PackageRequest) -> SignReport:
    """Sign the pushed image and its model files with --sign-key; attach BOM, lock and signatures to it."""
    from packager.signing.attach import Registry, sign_pushed
    from packager.signing.keys import load_signing_key

    image = request.image
    registry = Registry(split_target(image.tag)[0], image.username, image.password)
    key = load_signing_key(image.sign_key or "")
    return sign_pushed(rendered.context.path, rendered.context.lock, key, registry, pushed.digest, request.work)


def _quiet_log(request: PackageRequest, log: Log) -> Log:
    return (lambda _line: None) if request.quiet else log


def describe_layers(context: str, built: BuildResult) -> list[dict[str, Any]]:
    """Layers with what they hold: our Dockerfiles make one layer per COPY, after the base image's layers."""
    with open(os.path.join(context, "Dockerfile")) as f:
        copies = [" ".join(layer.sources) for layer in parse_dockerfile(f.read()).layers]
    layers = [dataclasses.asdict(layer) for layer in built.layers]
    base_count = len(layers) - len(copies)
    for i, layer in enumerate(layers):
        layer["content"] = "base image" if i < base_count else copies[i - base_count]
    return layers


def _report(
    rendered: Rendered, built: BuildResult, pushed: PushResult | None, signed: SignReport | None = None
) -> PackageReport:
    """The machine-readable outcome; `image_id`, `layers` and `digest` come from the engine and registry."""
    plan, image = rendered.plan, rendered.plan.image
    assert image is not None  # a rendered plan always has its image
    timings = {**rendered.timings, "build": built.seconds, **({"push": pushed.seconds} if pushed else {})}
    return PackageReport(
        image=image.tag,
        image_id=built.image_id,
        digest=pushed.digest if pushed else None,
        layout=image.layout,
        context=rendered.context.path,
        lock=rendered.context.lock_path,
        layers=describe_layers(rendered.context.path, built),
        size=built.size,
        port=image.port,
        base_mount=BASE_MOUNT if image.layout == "shared" else None,
        adapters=[s.name for s in plan.served] or [image.runtime.served_name or ""],
        timings=timings,
        pushed_bytes=pushed.pushed_bytes if pushed else None,
        notes=list(rendered.notes),
        artefact=rendered.artefact.to_dict() if rendered.artefact else None,
        builder=built.builder,
        reproducible=image.reproducible,
        manifests=rendered.manifests,
        base_model_image=image.model_image or None,
        signature=signed.to_dict() if signed else None,
    )
