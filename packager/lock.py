"""The lock file's content, derived from the plan: inputs pinned by sha256, what the merge wrote, the artefact's
report, every file the image holds and the context's own build files; no timestamps, so it diffs cleanly."""

from __future__ import annotations

import dataclasses
from typing import Any

from packager.plan import FileEntry, ImagePlan, MergePlan, PackagePlan


def plan_lock(
    plan: PackagePlan,
    output: tuple[FileEntry, ...] = (),
    artefact: dict[str, Any] | None = None,
    image_files: tuple[FileEntry, ...] = (),
    build_files: tuple[FileEntry, ...] = (),
) -> dict[str, Any]:
    """The lock file's content: inputs pinned by sha256, what the merge wrote (`output`), the artefact's
    report, every file the image holds (`image_files`) and the context's own build files (`build_files`:
    Dockerfile, .dockerignore, compose.yaml); no timestamps, so it diffs cleanly. How the image
    is built (builder, push) is left out: the same inputs give the same image whichever builder runs."""
    lock: dict[str, Any] = {
        "packager_version": plan.packager_version,
        "adapter": plan.adapter.to_dict(),
        "base": plan.base.to_dict(),
    }
    if plan.task.name != "CAUSAL_LM":  # only when set, so causal-LM locks stay byte-identical
        lock["task"] = {"name": plan.task.name, "class": plan.task.auto_class}
    if plan.merge is not None:
        lock["merge"] = _merge_lock(plan.merge)
    if plan.quantize is not None:  # only when set, so other locks stay byte-identical
        lock["quantize"] = plan.quantize.summary()
    if plan.served:
        lock["adapters"] = {s.name: s.spec.to_dict() for s in plan.served}
    if output:
        lock["output"] = {"files": [f.to_lock() for f in output]}
    if artefact is not None:
        lock["artefact"] = artefact
    if plan.image is not None:
        lock["image"] = _image_lock(plan.image, image_files, build_files)
    return lock


def _merge_lock(merge: MergePlan) -> dict[str, Any]:
    data: dict[str, Any] = {"engine": merge.engine, "dtype": merge.dtype, "tokenizer_from": merge.tokenizer_from}
    if merge.qlora:  # only when set, so other locks stay byte-identical
        data["qlora"] = dataclasses.asdict(merge.qlora)
    return data


def _image_lock(image: ImagePlan, files: tuple[FileEntry, ...], build: tuple[FileEntry, ...]) -> dict[str, Any]:
    data = {
        "layout": image.layout,
        "base_image": image.base_image,
        "tag": image.tag,
        "files": [f.to_lock() for f in files],
    }
    if image.model_image:  # only when set, so other locks stay byte-identical
        data["model_image"] = image.model_image
    return {**data, "build_files": [f.to_lock() for f in build]} if build else data
