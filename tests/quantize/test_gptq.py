"""packager's GPTQ step is llm-compressor's (at llm-compressor's 1% dampening): on the same weight and Hessian
(inputs with a few strong channels, as real activations have), it gives the same quantized weights and scales;
and it beats round-to-nearest on the error that matters, the layer's output on those inputs (issue 17)."""

from __future__ import annotations

import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from packager.quantize.gptq import gptq_weight
from packager.quantize.tensors import compression_scheme, observed_range
from tests.quantize.test_oracle import oracle_python

SCRIPT = __file__.replace("test_gptq.py", "llmcompressor_gptq.py")
CASES = {"w4a16-g128": ("W4A16", 128), "w4a16-g64": ("W4A16", 64), "w8a16": ("W8A16", 128), "w8a8": ("W8A8", None)}


def layer(out: int = 96, columns: int = 256, tokens: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bf16 weight, inputs with outlier channels, and their Hessian 2 X^T X / n (fp32)."""
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(out, columns, generator=generator) * 0.05).to(torch.bfloat16)
    inputs = torch.randn(tokens, columns, generator=generator)
    inputs[:, :8] *= 20  # a few strong channels: what makes activation order and GPTQ matter
    return weight, inputs, 2 * inputs.T @ inputs / tokens


def ours(weight: torch.Tensor, hessian: torch.Tensor, preset: str, group: int | None):
    from compressed_tensors.quantization.utils import calculate_qparams

    args = compression_scheme(preset, group).weights
    scale, zero_point = calculate_qparams(*observed_range(weight, args), args)
    return gptq_weight(weight, hessian, args, scale, zero_point, dampening=0.01).to(weight.dtype), scale


@pytest.mark.parametrize("case", sorted(CASES))
def test_gptq_equals_llm_compressors(case, tmp_path) -> None:
    preset, group = CASES[case]
    weight, _inputs, hessian = layer()
    save_file({"weight": weight, "hessian": hessian}, str(tmp_path / "in.safetensors"))
    item = preset + (f":{group}" if group not in (None, 128) else "")
    argv = [oracle_python(), SCRIPT, str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"), item]
    subprocess.run(argv, check=True, capture_output=True)
    theirs = load_file(str(tmp_path / "out.safetensors"))
    quantized, scale = ours(weight, hessian, preset, group)
    assert torch.equal(scale, theirs["weight_scale"])
    differ = (quantized != theirs["weight"]).float().mean().item()
    assert differ == 0, f"{differ:.2%} of the weights differ"


def test_gptq_beats_round_to_nearest_on_the_layers_output() -> None:
    from compressed_tensors.quantization import fake_quantize

    weight, inputs, hessian = layer()
    quantized, scale = ours(weight, hessian, "W4A16", 64)
    args = compression_scheme("W4A16", 64).weights
    nearest = fake_quantize(weight.float(), scale.float(), torch.zeros_like(scale), args)
    exact = inputs @ weight.float().T
    gptq_error = (inputs @ quantized.float().T - exact).pow(2).mean()
    rtn_error = (inputs @ nearest.T - exact).pow(2).mean()
    assert gptq_error < 0.7 * rtn_error, (gptq_error, rtn_error)
