"""PEFT's LoRA merge arithmetic, one tensor at a time (reference: peft/tuners/lora/layer.py).

PEFT computes the delta in fp32 on CPU (`transpose(B @ A, fan_in_fan_out) * scaling`), and with its
default `autocast_adapter_dtype=True` adds that fp32 delta into a 16-bit weight in place, so the sum is
rounded once. Both are mirrored here so results are bit-identical.
"""

from __future__ import annotations

import torch

from packager.errors import AdapterError
from packager.plan import Delta


def delta_weight(delta: Delta, a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """The fp32 update a Delta adds to its target tensor."""
    if delta.kind == "bias":
        return b.float() * delta.scaling
    product = b.float() @ a.float()
    if delta.transpose:
        product = product.T
    return product * delta.scaling


def add_delta(weight: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """weight + update, computed in fp32 and rounded once to the weight's dtype."""
    if weight.dtype == torch.float32:
        return weight + update
    return (weight.float() + update).to(weight.dtype)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """PEFT's safe_merge check: a NaN or inf after merging means the adapter is broken."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise AdapterError(
            f"merging produced NaN/inf in {name}: the adapter weights are broken (check training for divergence)"
        )
