"""PEFT's merge arithmetic, one tensor at a time: LoRA (reference: peft/tuners/lora/layer.py) and (IA)3
(peft/tuners/ia3/layer.py).

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


class Workspace:
    """fp32 scratch buffers, grown to the largest delta and reused, so merging allocates nothing per tensor."""

    def __init__(self) -> None:
        self._buffers = [torch.empty(0, dtype=torch.float32), torch.empty(0, dtype=torch.float32)]

    def take(self, rows: int, cols: int, slot: int = 0) -> torch.Tensor:
        """A rows x cols fp32 view of buffer `slot`, grown when too small; valid until that slot is taken again."""
        if self._buffers[slot].numel() < rows * cols:
            self._buffers[slot] = torch.empty(rows * cols, dtype=torch.float32)
        return self._buffers[slot][: rows * cols].view(rows, cols)


def merge_into(
    weight: torch.Tensor,
    delta: Delta,
    a: torch.Tensor | None,
    b: torch.Tensor,
    workspace: Workspace,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`weight` plus the delta, computed as PEFT does (fp32, one rounding), written into `out` (same shape and
    dtype as `weight`; default: `weight` itself, in place). A bias or (IA)3 delta returns a new tensor."""
    if delta.kind == "bias":
        return add_delta(weight, delta_weight(delta, a, b))
    if delta.kind in ("scale", "scale_bias"):
        return scale(weight, delta, b)
    target = weight if out is None else out
    product = workspace.take(b.shape[0], a.shape[1])
    torch.matmul(b.float(), a.float(), out=product)
    product.mul_(delta.scaling)
    update = product.T if delta.transpose else product
    if weight.dtype == torch.float32:
        return torch.add(weight, update, out=target)
    # fp32(weight) + update, the same sum as weight.float() + delta; upcasting into a second buffer first is
    # ~5x faster than a mixed-dtype add and gives identical bits
    upcast = workspace.take(*weight.shape, slot=1)
    update.add_(upcast.copy_(weight))
    return target.copy_(update)  # rounded once to the weight's dtype, as .to() does


def scale(weight: torch.Tensor, delta: Delta, vector: torch.Tensor) -> torch.Tensor:
    """(IA)3's merge as PEFT's does it: `torch.mul(weight, ia3_l)` with the vector in fp32 (PEFT upcasts 16-bit
    adapter weights), rounded once to the weight's dtype; a bias is scaled by the same vector, flattened."""
    factor = vector.float()
    if delta.kind == "scale_bias":
        factor = factor.reshape(weight.shape)
    elif delta.transpose:
        factor = factor.T
    return torch.mul(weight, factor).to(weight.dtype)


def check_adapter_finite(module: str, *factors: torch.Tensor | None) -> None:
    """NaN or inf in a merge comes from the adapter's factors (PEFT's safe_merge blames the adapter too)."""
    for factor in factors:
        if factor is not None and not torch.isfinite(factor).all():
            raise AdapterError(
                f"adapter weights for {module} contain NaN/inf: the adapter is broken (check training for divergence)"
            )


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """PEFT's safe_merge check: a NaN or inf after merging means the adapter is broken."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise AdapterError(
            f"merging produced NaN/inf in {name}: the adapter weights are broken (check training for divergence)"
        )
