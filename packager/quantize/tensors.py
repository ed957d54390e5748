"""Quantize weight tensors one at a time with the compressed-tensors library, exactly as llm-compressor's
round-to-nearest `oneshot` does: the weight observed as its min-max observer flattens it, scales and zero points
from `calculate_qparams`, the bytes from the format's own compressor, and config.json's `quantization_config`
from `ModelCompressor`. tests/quantize/test_oracle.py holds the output equal to llm-compressor's, tensor for tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from packager.io.safetensors_format import DTYPE_NAMES, DTYPES
from packager.io.writer import OutputTensor
from packager.quantize.plan import QuantizePlan


@functools.lru_cache(maxsize=8)
def compression_scheme(preset: str, group_size: int | None):
    """The compressed-tensors QuantizationScheme of a preset (targets Linear), its group size set, its format
    inferred by the library as for an nn.Linear."""
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.quantization import preset_name_to_scheme

    scheme = preset_name_to_scheme(preset, ["Linear"])
    if group_size is not None and scheme.weights.group_size != group_size:
        scheme.weights = scheme.weights.model_copy(update={"group_size": group_size})
    scheme.format = infer_module_format(torch.nn.Linear, scheme).value
    return scheme


def observed_range(weight: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    """The min and max a memoryless min-max observer sees: per output channel, per group of input columns, or
    over the whole tensor, reduced as llm-compressor's weight observer reduces them (dims 0 and -1)."""
    if args.strategy == "channel":
        observed = weight.unsqueeze(-2).unsqueeze(0)
    elif args.strategy == "group":
        observed = weight.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    elif args.strategy == "tensor":
        observed = weight.reshape(1, 1, -1)
    else:
        raise ValueError(f"weight strategy {args.strategy} is not one packager quantizes")
    return torch.amin(observed, dim=(0, -1)), torch.amax(observed, dim=(0, -1))


ROWS_PER_CHUNK_BYTES = 32 << 20  # a weight is compressed in blocks of rows about this big (temporaries bounded)


def compress_weight(weight: torch.Tensor, preset: str, group_size: int | None) -> dict[str, torch.Tensor]:
    """One Linear weight (out, in) as its compressed tensors by local name (weight, weight_scale, weight_packed,
    weight_shape, ...), sorted by name. Per-channel and per-group quantization treat each row alone, so a large
    weight goes through the library a block of rows at a time and the blocks are stacked: the same bytes, with the
    library's temporaries (a few copies of what it is given) bounded by the block, not the weight."""
    scheme = compression_scheme(preset, group_size)
    rows = max(1, ROWS_PER_CHUNK_BYTES // max(1, weight.shape[1] * weight.element_size()))
    if scheme.weights.strategy not in ("channel", "group") or weight.shape[0] <= rows:
        return _compress_rows(weight, scheme)
    parts = [_compress_rows(block, scheme) for block in weight.split(rows)]
    stacked = {name: torch.cat([p[name] for p in parts]) for name in parts[0] if parts[0][name].dim() == 2}
    if "weight_shape" in parts[0]:  # the original shape, not a block's
        stacked["weight_shape"] = torch.tensor(weight.shape, dtype=parts[0]["weight_shape"].dtype)
    return dict(sorted(stacked.items()))


def _compress_rows(weight: torch.Tensor, scheme) -> dict[str, torch.Tensor]:
    from compressed_tensors.quantization.utils import calculate_qparams

    low, high = observed_range(weight, scheme.weights)
    scale, zero_point = calculate_qparams(low, high, scheme.weights)
    return compress_state({"weight": weight, "weight_scale": scale, "weight_zero_point": zero_point}, scheme)


def compress_state(state: dict[str, torch.Tensor], scheme) -> dict[str, torch.Tensor]:
    """A weight and its quantization parameters (weight, weight_scale, weight_zero_point) as the format's
    compressor stores them, sorted by name (the weight may already sit on the grid, as GPTQ leaves it)."""
    from compressed_tensors.compressors import BaseCompressor

    compressor = BaseCompressor.get_value_from_registry(scheme.format)
    return dict(sorted(compressor.compress(state, scheme).items()))


@functools.lru_cache(maxsize=64)
def compressed_layout(dtype: str, shape: tuple[int, int], preset: str, group_size: int | None) -> tuple:
    """What one weight of this dtype and shape becomes: (local name, dtype, shape) for each compressed tensor.
    Found by compressing one row of zeros with the library itself: every 2-D output has a row per weight row."""
    rows, columns = shape
    row = torch.zeros((1, columns), dtype=DTYPES[dtype])
    return tuple(
        (name, DTYPE_NAMES[t.dtype], (rows, *t.shape[1:]) if t.dim() == 2 else tuple(t.shape))
        for name, t in compress_weight(row, preset, group_size).items()
    )


class Quantizer:
    """Turns the merge's output tensors into the quantized checkpoint's: the plan's targets become their
    compressed tensors, everything else passes through. With no plan it changes nothing."""

    def __init__(self, plan: QuantizePlan | None, calibrated: dict[str, str] | None = None) -> None:
        self.plan = plan
        self._targets = frozenset(plan.targets) if plan else frozenset()
        self._calibrated = calibrated or {}  # weight name -> the file GPTQ wrote its compressed tensors into

    def layout(self, tensors: list[OutputTensor]) -> list[OutputTensor]:
        """The output layout: each target replaced, in place, by its compressed tensors."""
        return [out for tensor in tensors for out in self._layout_of(tensor)]

    def _layout_of(self, tensor: OutputTensor) -> Iterator[OutputTensor]:
        if tensor.name not in self._targets:
            yield tensor
            return
        module = tensor.name.removesuffix("weight")
        for name, dtype, shape in compressed_layout(tensor.dtype, tensor.shape, self.plan.preset, self.plan.group_size):
            yield OutputTensor(module + name, dtype, shape)

    def outputs(self, name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """The tensors to write for one merged tensor, in layout order."""
        if name not in self._targets:
            yield name, self._replaced(name) if name in self._calibrated else tensor
            return
        module = name.removesuffix("weight")
        if name in self._calibrated:
            from safetensors.torch import load_file

            compressed = dict(sorted(load_file(self._calibrated[name]).items()))
        else:
            compressed = compress_weight(tensor, self.plan.preset, self.plan.group_size)
        for local, part in compressed.items():
            yield module + local, part

    def _replaced(self, name: str) -> torch.Tensor:
        """A tensor calibration changed without quantizing it (a norm's weight, smoothed)."""
        from safetensors.torch import load_file

        return load_file(self._calibrated[name])["tensor"]


def write_quantization_config(folder: str, plan: QuantizePlan) -> None:
    """Add `quantization_config` (quant_method compressed-tensors) to the folder's config.json, written by the
    library's own ModelCompressor as llm-compressor writes it."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig

    scheme = compression_scheme(plan.preset, plan.group_size)
    config = QuantizationConfig(
        config_groups={"group_0": scheme},
        format=scheme.format,
        ignore=list(plan.ignore),
        quantization_status="compressed",
    )
    ModelCompressor(quantization_config=config).update_config(folder)
