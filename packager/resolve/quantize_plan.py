"""Decide, before any weight is read, how a model is quantized: which weight tensors (every Linear but the output
projection and MoE routers, as llm-compressor's standard recipes leave them), with what group size, and refuse a
scheme the model's shapes cannot take, naming the layer and what works instead."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from packager.artefact.schemes import GROUP_SIZES, SCHEMES, SMOOTHING_STRENGTH
from packager.errors import UserInputError
from packager.model_files import TOKENIZER_VOCABULARIES
from packager.plan import BaseSpec, FileEntry, QuantizePlan, files_key
from packager.resolve.architecture import Architecture, inspect_architecture, read_config
from packager.resolve.base import index_base_weights
from packager.resolve.model_images import find_model_image, pinned_reference
from packager.resolve.resolver import Resolved, require_merge
from packager.tasks import ModelTask, base_task

FLOAT_DTYPES = ("BF16", "F16", "F32")
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def plan_quantization(
    scheme: str,
    arch: Architecture,
    tensors: Iterable[tuple[str, str, tuple[int, ...]]],
    config: dict[str, Any],
) -> QuantizePlan:
    """The QuantizePlan for `scheme` over the model's output tensors (name, safetensors dtype, shape)."""
    chosen = SCHEMES[scheme]
    linear = {name for name, kind in arch.module_kinds.items() if kind == "linear"}
    shapes = {
        name.removesuffix(".weight"): (dtype, shape) for name, dtype, shape in tensors if name.endswith(".weight")
    }
    routers = _routers(linear, shapes, config)
    quantized = sorted(
        m
        for m in linear & set(shapes)
        if m != arch.output_embedding and m not in routers and shapes[m][0] in FLOAT_DTYPES and len(shapes[m][1]) == 2
    )
    if not quantized:
        raise UserInputError(
            f"--quantize {scheme}: this model has no Linear layer to quantize ({_kinds(arch)}); compressed-tensors "
            "quantizes torch Linear layers (GPT-2's Conv1D are not): package it without --quantize"
        )
    ignore = sorted(linear - set(quantized))  # a tied lm_head too: stored or not, the class builds it as a Linear
    group, notes = _group_size(scheme, {m: shapes[m][1][1] for m in quantized}) if chosen.grouped else (None, ())
    return QuantizePlan(scheme, chosen.preset, group, tuple(f"{m}.weight" for m in quantized), tuple(ignore), notes)


def _routers(linear: set[str], shapes: dict[str, tuple[str, tuple[int, ...]]], config: dict[str, Any]) -> set[str]:
    """A mixture-of-experts model's router layers (out features = the expert count): left unquantized, as
    llm-compressor's MoE recipes and vLLM's MoE layers expect."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    experts = next((text[k] for k in EXPERT_COUNT_KEYS if isinstance(text.get(k), int)), None)
    if not experts:
        return set()
    return {
        m
        for m in linear
        if m in shapes and shapes[m][1][:1] == (experts,) and m.rsplit(".", 1)[-1] in {"gate", "router"}
    }


def _group_size(scheme: str, widths: dict[str, int]) -> tuple[int, tuple[str, ...]]:
    """The preset's group size (128) when every quantized layer's input width is a multiple of it, else the largest
    smaller one that is; none fits: refused."""
    fits = [size for size in GROUP_SIZES if all(w % size == 0 for w in widths.values())]
    if not fits:
        module, width = _odd(widths, GROUP_SIZES[-1])
        raise UserInputError(
            f"--quantize {scheme} quantizes in groups of input columns, and {module} takes {width}, not a multiple "
            f"of any group size packager uses ({', '.join(map(str, GROUP_SIZES))}); use --quantize w8a8 (per channel)"
        )
    if fits[0] == GROUP_SIZES[0]:
        return fits[0], ()
    module, width = _odd(widths, GROUP_SIZES[0])
    return fits[0], (
        f"{scheme}: group size {fits[0]}, not {GROUP_SIZES[0]}: {module} takes {width} input columns, not a multiple "
        f"of {GROUP_SIZES[0]} (vLLM's Marlin GPU kernels need {GROUP_SIZES[0]})",
    )


def _odd(widths: dict[str, int], size: int) -> tuple[str, int]:
    return next((m, w) for m, w in sorted(widths.items()) if w % size)


def _kinds(arch: Architecture) -> str:
    kinds = sorted({k for k in arch.module_kinds.values() if k != "other"})
    return "its layers are " + ", ".join(kinds) if kinds else "no weight layers found"


def with_quantization(resolved: Resolved, scheme: str, calibrate: str | None = None) -> Resolved:
    """`resolved` with its plan quantizing the merged weights as they stream out (a causal LM only), by GPTQ on the
    `calibrate` text when given ("": the shipped one)."""
    require_merge(resolved)
    task = resolved.plan.task
    if task.name != "CAUSAL_LM":
        raise UserInputError(
            f"--quantize {scheme} writes compressed-tensors checkpoints of causal LMs, and this is a {task.name} "
            "model; package it without --quantize (embeddings and classifiers: --export onnx --quantize int8)"
        )
    merge = resolved.plan.merge
    tensors = [(t.name, t.dtype, t.shape) for t in merge.tensors]
    plan = plan_quantization(scheme, resolved.architecture, tensors, read_config(resolved.plan.base.path))
    plan = with_calibration(plan, calibrate)
    if calibrate is not None:
        check_tokenizer(resolved.adapter.path if merge.tokenizer_from == "adapter" else resolved.plan.base.path)
    return dataclasses.replace(resolved, plan=dataclasses.replace(resolved.plan, quantize=plan))


def check_tokenizer(folder: str) -> None:
    """--calibrate reads its text through the model's tokenizer: a model without one is refused before any work."""
    if not any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_VOCABULARIES):
        raise UserInputError(
            f"--calibrate reads its text through the model's tokenizer, and {folder} has none; add the tokenizer "
            "files to the model folder, or drop --calibrate (round-to-nearest)"
        )


def with_calibration(plan: QuantizePlan, calibrate: str | None) -> QuantizePlan:
    """The plan quantizing by GPTQ on the `calibrate` text ("": the shipped one; None: round-to-nearest)."""
    if calibrate is None:
        return plan
    if plan.scheme == "fp8":
        raise UserInputError(
            "--calibrate runs GPTQ, which rounds to integer grids; fp8 is round-to-nearest only: drop --calibrate, "
            "or use --quantize w4a16|w8a16|w8a8"
        )
    if calibrate and not os.path.isfile(calibrate):
        raise UserInputError(
            f"--calibrate {calibrate} is not a file; pass a .txt or .jsonl of the text the model will see, or "
            "--calibrate alone for the text packager ships"
        )
    smoothing = SMOOTHING_STRENGTH if plan.scheme == "w8a8" else None  # activation outliers: what w8a8 loses most to
    return dataclasses.replace(plan, calibration=os.path.abspath(calibrate) if calibrate else "", smoothing=smoothing)


def shared_quantized_base(scheme: str, base: BaseSpec, request: Any) -> tuple[QuantizePlan, str, tuple, bool]:
    """A shared image on the base quantized with `scheme`: (its QuantizePlan, the base-model image holding it, the
    files pods mount, whether render must make it). The image `package-base --quantize` recorded for these very
    files and scheme gives its files; otherwise render quantizes the base into WORK/base-SCHEME and pins it."""
    plan = plan_folder_quantization(base.path, scheme)
    hashed = all(f.sha256 for f in base.files)  # a base never hashed here was never pushed from here either
    record = find_model_image(base.files, quantized_key(base.files, plan)) if hashed else None
    if record is not None and not request.base_model_image:
        return plan, record.reference, tuple(FileEntry(**f) for f in record.files), False
    image = pinned_reference(request.base_model_image) if request.base_model_image else ""
    return plan, image, base.files, True


def plan_folder_quantization(folder: str, scheme: str) -> QuantizePlan:
    """The QuantizePlan of a merged causal-LM folder (its config and safetensors headers only)."""
    config = read_config(folder)
    task = base_task(config)
    if task not in (None, "CAUSAL_LM"):
        raise UserInputError(
            f"--quantize {scheme} writes compressed-tensors checkpoints of causal LMs, and the model at {folder} is "
            f"a {task} model; quantize embeddings and classifiers with --export onnx --quantize int8"
        )
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise UserInputError(
            f"{folder} is quantized already ({method}); quantize the unquantized merge (`packager merge` output)"
        )
    weights = index_base_weights(folder, allow_pickle=False)
    arch = inspect_architecture(folder, weights.tensors, ModelTask())
    tensors = [(t.name, t.dtype, t.shape) for t in weights.tensors.values()]
    return plan_quantization(scheme, arch, tensors, config)


def quantized_key(files: tuple[FileEntry, ...], plan: QuantizePlan) -> str:
    """What a quantized base is recorded and looked up by: the 16-bit base's files and how they were quantized."""
    import compressed_tensors

    recipe = f"{files_key(files)}\0{plan.preset}\0{plan.group_size}\0{compressed_tensors.__version__}"
    return hashlib.sha256(recipe.encode()).hexdigest()


def base_folder(work: str, plan: QuantizePlan) -> str:
    """Where a job writes the quantized base (the folder a shared image's /base is mounted from)."""
    return os.path.abspath(os.path.join(work, f"base-{plan.scheme}"))
