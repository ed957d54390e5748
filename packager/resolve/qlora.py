"""QLoRA-trained adapters: detect them, choose the 16-bit original of a pre-quantized base to merge onto, and mark
the base weights to round through bitsandbytes' 4-bit format when asked to merge onto what training saw
(simulate-nf4; the rounding itself is the merge's, merge/qlora.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from packager.architecture.inspect import Architecture, read_config
from packager.errors import BaseNotFoundError, IncompatibleAdapterError, UserInputError
from packager.formats.adapter import Adapter
from packager.plan import MergePlan, QLoRASpec, TensorPlan
from packager.resolve.base import BaseLocation, locate_base

QLORA_MODES = ("w16", "simulate-nf4")
BNB_BLOCKSIZE = 64  # bitsandbytes' Params4bit default, which transformers uses when it loads a base in 4-bit
FOUR_BIT_NAME = re.compile(r"bnb[-_]?4bit|[-_.]4bit|nf4", re.IGNORECASE)
FOUR_BIT_SUFFIX = re.compile(r"(?:[-_]unsloth)?[-_](?:bnb[-_])?(?:4bit|nf4)$", re.IGNORECASE)
QUANTIZED_KINDS = ("linear", "conv1d")  # transformers replaces nn.Linear and Conv1D with bnb's Linear4bit


@dataclass(frozen=True)
class BaseChoice:
    """The base to merge onto, the config of the base the adapter names (when readable), and what to tell."""

    location: BaseLocation
    named_config: dict[str, Any] | None
    notes: tuple[str, ...] = ()


def bnb_quantization(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The config's bitsandbytes quantization_config, or None for an unquantized checkpoint."""
    quant = (config or {}).get("quantization_config")
    if not isinstance(quant, dict):
        return None
    loads_bnb = quant.get("load_in_4bit") or quant.get("_load_in_4bit") or quant.get("load_in_8bit")
    return quant if quant.get("quant_method") == "bitsandbytes" or loads_bnb else None


def is_4bit(quant: dict[str, Any] | None) -> bool:
    """Whether a bitsandbytes quantization_config (see `bnb_quantization`) loads the weights in 4-bit."""
    return bool(quant and (quant.get("load_in_4bit") or quant.get("_load_in_4bit")))


def qlora_hint(adapter_config: dict[str, Any], base_config: dict[str, Any] | None) -> str | None:
    """Why the adapter looks QLoRA-trained (its named base is a 4-bit checkpoint), or None."""
    name = adapter_config.get("base_model_name_or_path") or ""
    if is_4bit(bnb_quantization(base_config)):
        return f"its base {name or '(unnamed)'} is a bitsandbytes 4-bit checkpoint"
    if FOUR_BIT_NAME.search(name):
        return f"its base name {name} says 4-bit"
    return None


def sixteen_bit_name(name: str) -> str | None:
    """`unsloth/llama-3-8b-Instruct-bnb-4bit` -> `unsloth/llama-3-8b-Instruct`; None when no 4-bit suffix."""
    stripped = FOUR_BIT_SUFFIX.sub("", name.rstrip("/"))
    return stripped if stripped and stripped != name.rstrip("/") else None


def peek_config(name: str, revision: str | None) -> dict[str, Any] | None:
    """config.json of a local folder or a hub id (from the HF cache; from the hub only when online), or None."""
    if os.path.isdir(name):
        return read_config(name)
    from huggingface_hub import constants, hf_hub_download

    try:
        path = hf_hub_download(name, "config.json", revision=revision, local_files_only=constants.HF_HUB_OFFLINE)
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # not cached, offline, no such repo: unknown, and the base lookup reports it
        return None


def choose_base(adapter: Adapter, base: str | None, revision: str | None) -> BaseChoice:
    """Locate the base, replacing a pre-quantized 4-bit base named by the adapter with its 16-bit original."""
    hint = adapter.base_hint
    looks_4bit = bool(hint and FOUR_BIT_NAME.search(hint))
    named_config = peek_config(hint, revision or adapter.revision) if looks_4bit else None
    if base:
        location = locate_base(base, revision, True)
        _refuse_packed(location.path, f"--base {base}")
        return BaseChoice(location, named_config)
    sixteen = sixteen_bit_name(hint) if hint else None
    if sixteen and (named_config is None or bnb_quantization(named_config)):
        return _sixteen_bit_original(hint, sixteen, revision, named_config)
    location = locate_base(hint, revision or adapter.revision, False)
    named_config = read_config(location.path)
    if bnb_quantization(named_config):
        raise BaseNotFoundError(
            f"base {hint} (from the adapter config) is a pre-quantized bitsandbytes checkpoint whose packed weights "
            "cannot be merged, and its 16-bit original cannot be derived from the name; pass --base with the 16-bit "
            "weights"
        )
    return BaseChoice(location, named_config)


def _sixteen_bit_original(hint: str, sixteen: str, revision: str | None, named: dict | None) -> BaseChoice:
    try:
        location = locate_base(sixteen, revision, False)
    except BaseNotFoundError:
        raise BaseNotFoundError(
            f"base {hint} (from the adapter config) is a pre-quantized 4-bit checkpoint and its 16-bit original "
            f"{sixteen} was not found (not a local folder, not in the Hugging Face cache, or the hub is offline); "
            "download it or pass --base with the 16-bit weights"
        ) from None
    _refuse_packed(location.path, f"the 16-bit original {sixteen}")
    note = f"base {hint} is a pre-quantized 4-bit checkpoint; merging onto its 16-bit original {sixteen}"
    return BaseChoice(location, named, (note,))


def _refuse_packed(path: str, what: str) -> None:
    quant = bnb_quantization(read_config(path))
    if quant:
        bits = "4-bit" if is_4bit(quant) else "8-bit"
        raise IncompatibleAdapterError(
            f"{what} is a pre-quantized bitsandbytes {bits} checkpoint ({path}): its packed weights cannot be "
            "merged; pass --base with its 16-bit original (the same model before quantization)"
        )


def qlora_spec(
    adapter: Adapter, named_config: dict[str, Any] | None, mode: str | None, declared: bool
) -> tuple[QLoRASpec | None, tuple[str, ...]]:
    """The QLoRA merge settings (None for an ordinary adapter) and the notes that explain them."""
    if mode is not None and mode not in QLORA_MODES:
        raise UserInputError(f"unknown --qlora-merge {mode!r}; use one of {', '.join(QLORA_MODES)}")
    reason = qlora_hint(adapter.config, named_config) or ("declared with --qlora" if declared else None)
    if reason is None and mode is None:
        return None, ()
    notes = []
    if reason is None:
        reason = f"requested with --qlora-merge {mode}"
        notes.append(f"the adapter does not look QLoRA-trained (base {adapter.base_hint}); merged as asked")
    spec = _with_quant_settings(QLoRASpec(mode or "w16", reason), named_config, adapter.base_hint)
    notes.append(_mode_note(spec, mode is None))
    if spec.settings_from == "QLoRA defaults" and spec.mode == "simulate-nf4":
        notes.append("the 4-bit settings training used are not recorded; assumed QLoRA's: nf4, double quant")
    return spec, tuple(notes)


def _with_quant_settings(spec: QLoRASpec, config: dict[str, Any] | None, name: str | None) -> QLoRASpec:
    quant = bnb_quantization(config)
    if not is_4bit(quant):
        return spec
    skip = quant.get("llm_int8_skip_modules")
    return dataclasses.replace(
        spec,
        quant_type=str(quant.get("bnb_4bit_quant_type") or "fp4"),  # bitsandbytes' own default is fp4
        double_quant=bool(quant.get("bnb_4bit_use_double_quant", False)),
        skip_modules=tuple(skip) if isinstance(skip, list) else None,
        settings_from=f"quantization_config of {name}",
    )


def _mode_note(spec: QLoRASpec, defaulted: bool) -> str:
    if defaulted:
        return (
            f"adapter trained on a 4-bit base ({spec.reason}): merged onto the 16-bit weights; "
            "--qlora-merge simulate-nf4 merges onto the weights as training saw them"
        )
    if spec.mode == "w16":
        return f"QLoRA adapter ({spec.reason}): merged onto the 16-bit weights (--qlora-merge w16)"
    return (
        f"QLoRA adapter ({spec.reason}): every 4-bit-loaded weight rounded through bitsandbytes {spec.quant_type} "
        f"(blocksize {spec.blocksize}, double quant {'on' if spec.double_quant else 'off'}) before the adapter is added"
    )


def apply_qlora(merge: MergePlan, spec: QLoRASpec | None, arch: Architecture, notes: tuple[str, ...]) -> MergePlan:
    """Record the QLoRA spec in the merge plan and, for simulate-nf4, mark every tensor to round through 4-bit."""
    if spec is None:
        return merge
    tensors = merge.tensors
    if spec.mode == "simulate-nf4":
        if merge.engine != "stream":
            raise IncompatibleAdapterError(
                f"--qlora-merge simulate-nf4 needs packager's streaming LoRA merge, but this adapter is merged by "
                f"PEFT ({merge.engine_reason}); use --qlora-merge w16"
            )
        tensors = tuple(_with_round_trip(t, spec, arch) for t in tensors)
    return dataclasses.replace(merge, tensors=tensors, qlora=spec, notes=merge.notes + notes)


def _with_round_trip(tensor: TensorPlan, spec: QLoRASpec, arch: Architecture) -> TensorPlan:
    """transformers quantizes the weight of every Linear and Conv1D but the skipped ones (the output embedding
    by default); a tensor the adapter replaces (modules_to_save) is written as the adapter has it."""
    if tensor.source != "base" or not tensor.name.endswith(".weight"):
        return tensor
    module = tensor.name.removesuffix(".weight")
    kind = _module_kind(arch, module)
    if kind not in QUANTIZED_KINDS or _skipped(module, spec, arch):
        return tensor
    round_trip = spec.quant_type + ("-transposed" if kind == "conv1d" else "")
    return dataclasses.replace(tensor, round_trip=round_trip)


def _module_kind(arch: Architecture, module: str) -> str | None:
    if module in arch.module_kinds:
        return arch.module_kinds[module]
    similar = [n for n in arch.module_kinds if n.endswith("." + module) or module.endswith("." + n)]
    return arch.module_kinds[similar[0]] if len(similar) == 1 else None


def _skipped(module: str, spec: QLoRASpec, arch: Architecture) -> bool:
    """transformers' test in replace_with_bnb_linear: the leaf name, the full name, or a parent prefix."""
    skip = spec.skip_modules if spec.skip_modules is not None else (arch.output_embedding or "lm_head",)
    leaf = module.rsplit(".", 1)[-1]
    return leaf in skip or any(key == module or key + "." in module for key in skip)
