"""`packager package-base`: resolve the base alone -> plan -> context -> build -> push -> record.

The record (resolve.model_images) is what lets a later shared-layout `package` of an adapter on this base pin the
image by digest in its lock, labels and manifests without being told.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packager.accuracy.gate import AccuracyGate
from packager.builders import choose_builder, get_builder
from packager.builders.base import BuildRequest, PushRequest
from packager.errors import UserInputError
from packager.image.reference import registry_host, split_target
from packager.model_files import is_weight_file
from packager.model_image.context import write_model_context
from packager.model_image.plan import (
    DEFAULT_MAX_LAYER_BYTES,
    ModelImagePlan,
    ModelLayer,
    check_layer_fits,
    default_tag,
    plan_model_image,
)
from packager.model_image.reshard import plan_splits, planned_base, write_split_base
from packager.model_image.runnable import ensure_runnable_image
from packager.plan import BaseSpec, files_key
from packager.planning.model_images import ModelImageRecord, remember_model_image
from packager.resolve.pins import sampled_base
from packager.resolve.resolver import resolve_base

Log = Callable[[str], None]


@dataclass(frozen=True)
class BaseImageRequest:
    """What the user asked `package-base` for; every field maps to a CLI flag."""

    base: str
    revision: str | None = None
    tag: str | None = None
    from_image: str | None = None  # the runnable FROM image (default: packager's busybox image, built here)
    builder: str = "auto"
    push: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    max_layer_bytes: int = DEFAULT_MAX_LAYER_BYTES
    work: str = "packager-build"
    allow_pickle: bool = False
    quantize: str = "none"  # a compressed-tensors scheme: the image holds the base quantized (WORK/base-SCHEME)
    gate: AccuracyGate = AccuracyGate()  # noqa: RUF009 - frozen


@dataclass(frozen=True)
class BaseImageReport:
    """What `package-base` built and pushed: where the image is, what it holds, what it cost."""

    tag: str
    reference: str | None  # REPO@sha256:... once pushed
    digest: str | None
    base_id: str
    files_key: str
    files: int
    layers: list[dict[str, Any]]
    size: int
    builder: str
    timings: dict[str, float]
    pushed_bytes: int | None = None
    skipped_layers: int | None = None
    record: str | None = None  # where the record for later `package` runs was written
    split: list[str] = field(default_factory=list)  # base files split at tensor boundaries to fit the layer cap
    quantized: dict[str, Any] | None = None  # --quantize: the scheme, and the base's accuracy against 16-bit

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (`--json`, `--report`)."""
        return dataclasses.asdict(self)


def plan_base_image(
    request: BaseImageRequest, runnable: str | None = None, dry_run: bool = False, log: Log = print
) -> ModelImagePlan:
    """Resolve and pin the base, quantize it (--quantize, into WORK/base-SCHEME) and split weight files above the
    layer cap (into WORK/base-split) unless a dry run, then freeze the image's plan (no engine needed when
    `runnable` is given)."""
    base = resolve_base(request.base, request.revision, request.allow_pickle)
    base, quantized_key, accuracy = _quantized(base, request, dry_run, log)
    builder = choose_builder(request.builder, request.push)
    runnable = runnable or request.from_image or ensure_runnable_image()
    tag = request.tag or default_tag(base)
    if request.push and registry_host(tag) == "docker.io":
        raise UserInputError(f"--push needs a tag that names a registry, e.g. --tag 127.0.0.1:5000/{tag}")
    meta = ModelLayer("meta", tuple(f for f in base.files if not is_weight_file(f.path)))
    check_layer_fits(meta, request.max_layer_bytes)  # before any split: splitting weights cannot help it
    splits = plan_splits(base, request.max_layer_bytes)
    image_base = base
    if splits:
        split_to = os.path.join(request.work, "base-split")
        os.makedirs(request.work, exist_ok=True)
        image_base = planned_base(base, splits) if dry_run else write_split_base(base, splits, split_to)
    split = tuple(s.source for s in splits)
    key = quantized_key or (files_key(base.files) if splits else "")
    plan = plan_model_image(
        image_base, tag, runnable, builder, request.push, request.max_layer_bytes, split, key, dry_run
    )
    quantization = request.quantize if request.quantize != "none" else ""
    return dataclasses.replace(plan, quantization=quantization, accuracy=accuracy)


def _quantized(base: BaseSpec, request: BaseImageRequest, dry_run: bool, log: Log):
    """The base the image holds: as resolved, or quantized into WORK/base-SCHEME (a dry run only plans it), with
    the key a shared package finds it by and its accuracy against the 16-bit base."""
    if request.quantize == "none":
        return base, "", None
    from packager.planning.quantized import base_folder, quantized_key
    from packager.quantize.base import quantize_base
    from packager.quantize.plan import plan_folder_quantization

    plan = plan_folder_quantization(base.path, request.quantize)
    key = quantized_key(base.files, plan)
    if dry_run:
        return base, key, None
    target = base_folder(request.work, plan)
    os.makedirs(request.work, exist_ok=True)
    report = quantize_base(base.path, base.label_id, plan, target, request.gate, log)
    return resolve_base(target), key, report.accuracy.to_dict()


def package_base(request: BaseImageRequest, log: Log = print) -> BaseImageReport:
    """Every step; on failure nothing is recorded as pushed."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    builder = get_builder(choose_builder(request.builder, request.push))  # fails fast without an engine
    plan = plan_base_image(request, log=log)
    timings["resolve"] = time.monotonic() - started
    os.makedirs(request.work, exist_ok=True)
    context = write_model_context(plan, os.path.join(request.work, "base-context"))
    timings["render"] = time.monotonic() - started - timings["resolve"]
    log(f"base {plan.base.label_id}: {len(plan.base.files)} files in {len(plan.layers)} layers -> {plan.tag}")
    built = builder.build(BuildRequest(context.path, plan.tag), log=log)
    timings["build"] = built.seconds
    if not request.push:
        return _report(plan, built, None, timings, None)
    pushed = builder.push(PushRequest(plan.tag, plan.tag, request.username, request.password), log)
    timings["push"] = pushed.seconds
    # the image's own files, when they are not the base's as resolved (split, quantized): what pods get mounted
    files = tuple(dataclasses.asdict(f) for f in sampled_base(plan.base).files) if plan.source_files_key else ()
    record = ModelImageRecord(_reference(plan, pushed), plan.tag, plan.base.label_id, plan.lookup_key, files)
    return _report(plan, built, pushed, timings, remember_model_image(record))


def _reference(plan: ModelImagePlan, pushed) -> str:
    """REPO@sha256:... of the pushed image."""
    repository, _ = split_target(plan.tag)
    return f"{repository}@{pushed.digest}"


def _report(plan: ModelImagePlan, built, pushed, timings: dict[str, float], record: str | None) -> BaseImageReport:
    names = ["runnable base"] * (len(built.layers) - len(plan.layers)) + [layer.name for layer in plan.layers]
    return BaseImageReport(
        tag=plan.tag,
        reference=_reference(plan, pushed) if pushed else None,
        digest=pushed.digest if pushed else None,
        base_id=plan.base.label_id,
        files_key=plan.files_key,
        files=len(plan.base.files),
        layers=[
            {**dataclasses.asdict(layer), "content": name} for layer, name in zip(built.layers, names, strict=False)
        ],
        size=built.size,
        builder=built.builder,
        timings=timings,
        pushed_bytes=pushed.pushed_bytes if pushed else None,
        skipped_layers=pushed.skipped_layers if pushed else None,
        record=record,
        split=list(plan.split),
        quantized=_quantized_report(plan),
    )


def _quantized_report(plan: ModelImagePlan) -> dict[str, Any] | None:
    if not plan.quantization:
        return None
    from packager.accuracy.logits import AccuracyReport

    accuracy = dict(plan.accuracy or {})
    accuracy.pop("perplexity_change", None)
    summary = AccuracyReport(**accuracy).summary() if accuracy else "not measured"
    return {"kind": f"compressed-tensors-{plan.quantization}", "accuracy": plan.accuracy, "summary": summary}
