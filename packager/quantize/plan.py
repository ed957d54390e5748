"""Decide, before any weight is read, how a model is quantized: which weight tensors (every Linear but the output
projection and MoE routers, as llm-compressor's standard recipes leave them), with what group size, and refuse a
scheme the model's shapes cannot take, naming the layer and what works instead."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from packager.errors import UserInputError
from packager.model_files import TOKENIZER_VOCABULARIES
from packager.quantize.schemes import GROUP_SIZES, get_scheme, schemes
from packager.tasks import ModelTask, base_task

if TYPE_CHECKING:  # the plan's types stay torch-free (the CLI checks flags before importing torch)
    from packager.architecture.inspect import Architecture


@dataclass(frozen=True)
class QuantizePlan:
    """How the merged weights are quantized as they stream out: a compressed-tensors scheme, its group size,
    which weight tensors it applies to, and the Linear modules it leaves alone (config.json's `ignore`)."""

    scheme: str  # packager's name: w8a8, w8a16, w4a16, fp8
    preset: str  # the compressed-tensors preset it is: W8A8, W8A16, W4A16, FP8_DYNAMIC
    group_size: int | None  # columns per weight scale (w8a16, w4a16); None: one scale per output channel
    targets: tuple[str, ...] = field(repr=False)  # the weight tensors quantized, by name
    ignore: tuple[str, ...] = ("lm_head",)
    notes: tuple[str, ...] = ()
    calibration: str | None = None  # GPTQ on this text file ("": the one packager ships); None: round-to-nearest
    smoothing: float | None = None  # calibrated w8a8: SmoothQuant's strength (norms and Linears rescaled first)

    def summary(self) -> dict[str, Any]:
        """The plan without its long target list (what --dry-run prints and the lock records)."""
        data = dataclasses.asdict(self)
        data["targets"] = f"{len(self.targets)} weight tensors"
        return data


FLOAT_DTYPES = ("BF16", "F16", "F32")
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def plan_quantization(
    scheme: str,
    arch: Architecture,
    tensors: Iterable[tuple[str, str, tuple[int, ...]]],
    config: dict[str, Any],
) -> QuantizePlan:
    """The QuantizePlan for `scheme` over the model's output tensors (name, safetensors dtype, shape)."""
    chosen = get_scheme(scheme)
    linear = linear_modules(arch)
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


def linear_modules(arch: Architecture) -> set[str]:
    """The model's Linear modules, by name: what every scheme quantizes (Conv1D and embeddings are not)."""
    return {name for name, kind in arch.module_kinds.items() if kind == "linear"}


def load_time_weights(arch: Architecture) -> frozenset[str]:
    """The weight tensors a load-time scheme quantizes: every Linear's but the output projection's (bitsandbytes'
    and vLLM's default skip)."""
    return frozenset(f"{m}.weight" for m in linear_modules(arch) if m != arch.output_embedding)


def check_quantizable(scheme: str, task: str | None, what: str) -> None:
    """Only causal LMs are quantized (checkpoints and load-time schemes); an embeddings model or classifier goes
    to ONNX int8 instead. `task`: the model's (None: not known, taken as a causal LM); `what`: the model named."""
    kind = get_scheme(scheme).kind if scheme != "none" else "none"
    if kind in ("streamed", "load-time") and task not in (None, "CAUSAL_LM"):
        raise UserInputError(
            f"--quantize {scheme} applies to causal LMs, and {what} is a {task} model; package it without "
            "--quantize, or as ONNX (--export onnx --quantize int8)"
        )


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
    scheme = get_scheme(plan.scheme)
    if not scheme.calibrates:
        calibrated = "|".join(s.name for s in schemes("streamed") if s.calibrates)
        raise UserInputError(
            f"--calibrate runs GPTQ, which rounds to integer grids; {plan.scheme} is round-to-nearest only: drop "
            f"--calibrate, or use --quantize {calibrated}"
        )
    if calibrate and not os.path.isfile(calibrate):
        raise UserInputError(
            f"--calibrate {calibrate} is not a file; pass a .txt or .jsonl of the text the model will see, or "
            "--calibrate alone for the text packager ships"
        )
    calibration = os.path.abspath(calibrate) if calibrate else ""
    return dataclasses.replace(plan, calibration=calibration, smoothing=scheme.smoothing)


def plan_folder_quantization(folder: str, scheme: str, calibrate: str | None = None) -> QuantizePlan:
    """The QuantizePlan of a merged causal-LM folder (its config and safetensors headers only), by GPTQ on the
    `calibrate` text when given (the folder's tokenizer checked before any work)."""
    from packager.architecture.inspect import inspect_architecture, read_config
    from packager.architecture.weights import index_base_weights

    config = read_config(folder)
    check_quantizable(scheme, base_task(config), f"the model at {folder}")
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise UserInputError(
            f"{folder} is quantized already ({method}); quantize the unquantized merge (`packager merge` output)"
        )
    weights = index_base_weights(folder, allow_pickle=False)
    arch = inspect_architecture(folder, weights.tensors, ModelTask())
    tensors = [(t.name, t.dtype, t.shape) for t in weights.tensors.values()]
    plan = with_calibration(plan_quantization(scheme, arch, tensors, config), calibrate)
    if calibrate is not None:
        check_tokenizer(folder)
    return plan
