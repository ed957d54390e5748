"""A plan's quantization: the merge's weights quantized as they stream (baked), or the base quantized for a
shared image (the base-model image `package-base --quantize` recorded, or the folder render makes); how a
quantized base is recorded and found again."""

from __future__ import annotations

import dataclasses
import hashlib
import os

from packager.architecture.inspect import read_config
from packager.plan import BaseSpec, FileEntry, files_key
from packager.planning.model_images import find_model_image, pinned_reference
from packager.quantize.plan import (
    QuantizePlan,
    check_quantizable,
    check_tokenizer,
    plan_folder_quantization,
    plan_quantization,
    with_calibration,
)
from packager.resolve.resolver import Resolved, require_merge


def with_quantization(resolved: Resolved, scheme: str, calibrate: str | None = None) -> Resolved:
    """`resolved` with its plan quantizing the merged weights as they stream out (a causal LM only), by GPTQ on the
    `calibrate` text when given ("": the shipped one)."""
    require_merge(resolved)
    check_quantizable(scheme, resolved.plan.task.name, "this")
    merge = resolved.plan.merge
    tensors = [(t.name, t.dtype, t.shape) for t in merge.tensors]
    plan = plan_quantization(scheme, resolved.architecture, tensors, read_config(resolved.plan.base.path))
    plan = with_calibration(plan, calibrate)
    if calibrate is not None:
        check_tokenizer(resolved.adapter.path if merge.tokenizer_from == "adapter" else resolved.plan.base.path)
    return dataclasses.replace(resolved, plan=dataclasses.replace(resolved.plan, quantize=plan))


def shared_quantized_base(
    scheme: str, base: BaseSpec, base_model_image: str | None
) -> tuple[QuantizePlan, str, tuple, bool]:
    """A shared image on the base quantized with `scheme`: (its QuantizePlan, the base-model image holding it, the
    files pods mount, whether render must make it). The image `package-base --quantize` recorded for these very
    files and scheme gives its files; otherwise render quantizes the base into WORK/base-SCHEME and pins it."""
    plan = plan_folder_quantization(base.path, scheme)
    hashed = all(f.sha256 for f in base.files)  # a base never hashed here was never pushed from here either
    record = find_model_image(base.files, quantized_key(base.files, plan)) if hashed else None
    if record is not None and not base_model_image:
        return plan, record.reference, tuple(FileEntry(**f) for f in record.files), False
    image = pinned_reference(base_model_image) if base_model_image else ""
    return plan, image, base.files, True


def quantized_key(files: tuple[FileEntry, ...], plan: QuantizePlan) -> str:
    """What a quantized base is recorded and looked up by: the 16-bit base's files and how they were quantized."""
    import compressed_tensors

    recipe = f"{files_key(files)}\0{plan.preset}\0{plan.group_size}\0{compressed_tensors.__version__}"
    return hashlib.sha256(recipe.encode()).hexdigest()


def base_folder(work: str, plan: QuantizePlan) -> str:
    """Where a job writes the quantized base (the folder a shared image's /base is mounted from)."""
    return os.path.abspath(os.path.join(work, f"base-{plan.scheme}"))
