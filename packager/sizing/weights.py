"""The weights as the engine holds them, from the safetensors headers alone: each tensor's bytes as stored (a
pre-quantized checkpoint's FP8, int4 or MXFP4 bytes included), or at a quantization's width where packager or the
engine quantizes it, grouped by decoder layer so a pipeline stage's share can be told.

Two rules follow vLLM rather than the files: layers past `num_hidden_layers` (DeepSeek's multi-token-prediction
module) are stored but not loaded, and MXFP4 expert weights are padded to the MoE kernel's tile on load
(`mxfp4_round_up_hidden_size_and_intermediate_size`, the Marlin rule of Hopper GPUs: intermediate to 128, hidden
to 256), which is why gpt-oss-120b's 60.6 GiB of files take ~66 GiB on an H100 (vLLM #23278)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packager.io.safetensors_format import element_size
from packager.sizing.shape import ModelShape

LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
NOT_DECODER = ("vision", "visual", "image", "audio", "mm_projector", "multi_modal", "encoder.")
LAST_STAGE = ("lm_head", "embed_out", "final_layernorm", "ln_f.")
MXFP4_HIDDEN_TILE, MXFP4_INTERMEDIATE_TILE = 256, 128
NO_LORA = ("expert", "router", ".gate.", "norm", "embed")


@dataclass(frozen=True)
class Weights:
    """Served bytes: per decoder layer (index order), on the first stage (embeddings and anything outside the
    layers), on the last stage (final norm, output head), and stored but not loaded."""

    layers: tuple[int, ...]
    first: int
    last: int
    skipped: int = 0
    lora_widths: tuple[int, ...] = ()  # per layer: in + out summed over the Linear weights vLLM wraps for LoRA

    @property
    def total(self) -> int:
        """Every served byte."""
        return sum(self.layers) + self.first + self.last

    def lora_width(self, index: int, stages: int) -> int:
        """in + out of the LoRA-wrapped Linear layers of pipeline stage `index` of `stages`."""
        start, end = stage_layers(len(self.layers), index, stages)
        return sum(self.lora_widths[start:end])

    def stage(self, index: int, stages: int) -> int:
        """The bytes pipeline stage `index` of `stages` holds (vLLM's partition of the layers)."""
        start, end = stage_layers(len(self.layers), index, stages)
        edge = (self.first if index == 0 else 0) + (self.last if index == stages - 1 else 0)
        return sum(self.layers[start:end]) + edge


def stage_layers(count: int, index: int, stages: int) -> tuple[int, int]:
    """Layers [start, end) of stage `index`: an even split, the remainder on the stages before the last (vLLM's
    get_pp_indices)."""
    sizes = [count // stages] * stages
    for i in range(2, count % stages + 2):
        sizes[-i] += 1
    start = sum(sizes[:index])
    return start, start + sizes[index]


def served_weights(
    tensors: Mapping[str, Any], shape: ModelShape, quantized: Mapping[str, float], config: dict[str, Any]
) -> Weights:
    """`tensors`: name -> (dtype, shape) as the headers list them; `quantized`: tensor name -> bytes per element
    where packager or the engine quantizes it (everything else is served as stored)."""
    count = len(shape.layers)
    layers, widths, first, last, skipped = [0] * count, [0] * count, 0, 0, 0
    pad = _mxfp4_padding(shape, config)
    for name, info in tensors.items():
        size = _bytes(info, quantized.get(name), pad)
        index = _layer(name)
        if index is not None and index >= count:
            skipped += size
        elif index is not None:
            layers[index] += size
            widths[index] += _lora_width(name, info)
        elif any(key in name for key in LAST_STAGE) or name.endswith(("norm.weight", "norm.bias")):
            last += size
        else:
            first += size
    return Weights(tuple(layers), first, last, skipped, tuple(widths))


def _lora_width(name: str, info: Any) -> int:
    """in + out of a Linear weight vLLM gives LoRA slots (not the experts or the router of a mixture of experts)."""
    if len(info.shape) != 2 or not name.endswith(".weight") or any(k in name for k in NO_LORA):
        return 0
    return int(info.shape[0] + info.shape[1])


def _layer(name: str) -> int | None:
    if any(part in name for part in NOT_DECODER):
        return None
    found = LAYER_INDEX.search(name)
    return int(found.group(1)) if found else None


def _bytes(info: Any, per_element: float | None, pad: float) -> int:
    count = math.prod(info.shape)
    if per_element is not None:
        return int(count * per_element)
    stored = count * element_size(info.dtype)
    return int(stored * pad) if pad != 1 and info.dtype == "U8" else stored


def _mxfp4_padding(shape: ModelShape, config: dict[str, Any]) -> float:
    """How much larger vLLM's MXFP4 expert weights are than the files (1 for any other format)."""
    quant = config.get("quantization_config")
    if not (isinstance(quant, dict) and quant.get("quant_method") == "mxfp4" and shape.hidden):
        return 1.0
    width = shape.moe_intermediate or shape.intermediate
    hidden = math.ceil(shape.hidden / MXFP4_HIDDEN_TILE) * MXFP4_HIDDEN_TILE
    inner = math.ceil(width / MXFP4_INTERMEDIATE_TILE) * MXFP4_INTERMEDIATE_TILE
    return hidden / shape.hidden * inner / width
