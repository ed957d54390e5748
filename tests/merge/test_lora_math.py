"""PEFT's merge arithmetic, checked against PEFT's own LoRA layer (no model folder needed)."""

from __future__ import annotations

import pytest
import torch

from packager.errors import AdapterError
from packager.merge.lora_math import Workspace, check_adapter_finite, delta_weight, merge_into
from packager.plan import Delta


def _peft_merged(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: int, fan_in_fan_out: bool):
    """What PEFT's merge_and_unload gives for these factors (GPT-2's Conv1D stores the weight transposed)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rows, cols = weight.shape
            self.proj = Conv1D(cols, rows) if fan_in_fan_out else torch.nn.Linear(cols, rows, bias=False)

    tiny = Tiny().to(weight.dtype)
    with torch.no_grad():
        tiny.proj.weight.copy_(weight)
    config = LoraConfig(r=a.shape[0], lora_alpha=alpha, target_modules=["proj"], fan_in_fan_out=fan_in_fan_out)
    model = get_peft_model(tiny, config)
    with torch.no_grad():
        model.base_model.model.proj.lora_A["default"].weight.copy_(a)
        model.base_model.model.proj.lora_B["default"].weight.copy_(b)
    return model.merge_and_unload().proj.weight.detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fan_in_fan_out", [False, True])
def test_merge_into_is_bit_identical_to_peft(dtype, fan_in_fan_out) -> None:
    torch.manual_seed(0)
    rows, cols = (16, 24) if fan_in_fan_out else (24, 16)
    weight = torch.randn(rows, cols).to(dtype)
    out_features, in_features = (cols, rows) if fan_in_fan_out else (rows, cols)
    a, b = torch.randn(4, in_features), torch.randn(out_features, 4)
    delta = Delta("linear", "m", "a", "b", scaling=8 / 4, transpose=fan_in_fan_out)
    merged = merge_into(weight.clone(), delta, a, b, Workspace())
    assert torch.equal(merged, _peft_merged(weight, a, b, alpha=8, fan_in_fan_out=fan_in_fan_out))


def test_out_buffer_leaves_the_input_untouched() -> None:
    weight, a, b = torch.randn(8, 6).bfloat16(), torch.randn(2, 6), torch.randn(8, 2)
    before, out = weight.clone(), torch.empty_like(weight)
    result = merge_into(weight, Delta("linear", "m", "a", "b", 0.5), a, b, Workspace(), out=out)
    assert result.data_ptr() == out.data_ptr() and torch.equal(weight, before) and not torch.equal(out, before)


def test_bias_delta_is_the_scaled_bias() -> None:
    b = torch.randn(5)
    assert torch.equal(delta_weight(Delta("bias", "m", None, "b", 3.0), None, b), b * 3.0)


def test_a_non_finite_adapter_is_blamed_on_the_adapter() -> None:
    with pytest.raises(AdapterError, match="m"):
        check_adapter_finite("m", torch.tensor([1.0, float("nan")]), torch.ones(2))
