"""A model folder as a source of weights for a module-by-module forward pass (accuracy/lazy_model.py), one tensor
at a time: its safetensors read by name; with a QuantizePlan, the compressed weights decompressed by
compressed-tensors' own compressor, as transformers does when it loads the checkpoint. (The unquantized merge made
again from base + adapter is merge/merged_source.py.)

Names are the class's parameter names; a source maps them to what the files store (transformers' own renames,
and a tied output embedding read from the input embedding).
"""

from __future__ import annotations

import os

import torch

from packager.architecture.load_report import stored_names
from packager.formats.folders import safetensors_files
from packager.io.reader import SafetensorsShard
from packager.quantize.plan import QuantizePlan
from packager.quantize.tensors import compression_scheme


class FolderSource:
    """A model folder's tensors by name; the plan's quantized weights come back decompressed."""

    def __init__(self, folder: str, model: torch.nn.Module, plan: QuantizePlan | None = None) -> None:
        self._shards = [SafetensorsShard(os.path.join(folder, n)) for n in safetensors_files(folder)]
        self._where = {name: shard for shard in self._shards for name in shard.tensors}
        self._plan = plan
        self._targets = frozenset(plan.targets) if plan else frozenset()
        logical = [n for n in self._where if not _compressed_part(n, self._targets)] + list(self._targets)
        self._names = stored_names(model, logical)

    def __call__(self, name: str) -> torch.Tensor:
        stored = self._names[name]
        if stored in self._targets:
            return self._decompressed(stored)
        return self._read(stored).to(torch.float32, copy=True)

    def _read(self, name: str) -> torch.Tensor:
        return self._where[name].read(name)

    def _decompressed(self, name: str) -> torch.Tensor:
        from compressed_tensors.compressors import BaseCompressor

        plan = self._plan
        scheme = compression_scheme(plan.preset, plan.group_size)
        module = name.removesuffix("weight")
        state = {local: self._read(module + local) for local in self._parts(module)}
        weight = BaseCompressor.get_value_from_registry(scheme.format).decompress(state, scheme)["weight"]
        return weight.to(torch.float32)

    def _parts(self, module: str) -> list[str]:
        return [
            n.removeprefix(module)
            for n in self._where
            if n.startswith(module + "weight") and "." not in n[len(module) :]
        ]


def _compressed_part(name: str, targets: frozenset[str]) -> bool:
    """A stored tensor that is one piece of a quantized weight (weight, weight_scale, weight_packed, ...)."""
    module, _, local = name.rpartition(".")
    return f"{module}.weight" in targets and local.startswith("weight")


def activation_quantizer(plan: QuantizePlan | None):
    """The input hook that fake-quantizes what a quantized Linear sees, for schemes that quantize activations
    (w8a8, fp8: dynamically, per token, as vLLM does at run time); None for weight-only schemes."""
    scheme = compression_scheme(plan.preset, plan.group_size) if plan else None
    if scheme is None or scheme.input_activations is None:
        return None
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

    args, modules = scheme.input_activations, {t.removesuffix(".weight") for t in plan.targets}

    def quantize_input(module: str, value: torch.Tensor) -> torch.Tensor:
        """The input a quantized Linear sees: fake-quantized per token; other modules' inputs unchanged."""
        if module not in modules:
            return value
        scale, zero_point = compute_dynamic_scales_and_zp(value, args, None)
        return fake_quantize(value, scale, zero_point, args)

    return quantize_input
