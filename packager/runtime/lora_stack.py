"""Many LoRA adapters in one forward pass, each row with its own, without PEFT's per-adapter sub-batches: in every
LoRA layer the adapters' A matrices are stacked into one (ranks side by side), so a pass does one matmul into all
the ranks at once, keeps each row's own block (a 0/1 mask, zeros elsewhere), and one matmul through the stacked B
matrices; the row's scaling comes last, as in PEFT. PEFT's own adapter path is switched off in those layers (they
run their base layer only) and a forward hook adds the delta, in the adapters' dtype, cast back as PEFT casts.

Only plain LoRA on Linear layers stacks (no DoRA or other variant, no LoRA bias, no trained biases, no
modules_to_save or trainable tokens, no embedding or convolution LoRA): `stackable` says, and the scheduler falls
back to PEFT's `adapter_names` otherwise. tests/runtime/test_batching.py holds it token for token against PEFT."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


def stackable(model: Any) -> bool:
    """Whether every adapter of this PeftModel is plain LoRA on Linear layers."""
    from peft.tuners.lora.layer import Linear, LoraLayer

    configs = getattr(model, "peft_config", {}).values()
    plain = all(
        str(getattr(c, "peft_type", "")).rsplit(".", 1)[-1] == "LORA" and getattr(c, "bias", "none") == "none"
        and not getattr(c, "use_dora", False) and not getattr(c, "modules_to_save", None)
        and not getattr(c, "trainable_token_indices", None)
        for c in configs
    )  # fmt: skip
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    return plain and bool(layers) and all(_plain_linear(m, Linear) for m in layers)


def _plain_linear(layer: Any, linear: type) -> bool:
    return (
        type(layer) is linear
        and not layer.lora_variant
        and not any(getattr(b, "bias", None) is not None for b in layer.lora_B.values())
    )


class LoraStack:
    """The stacked adapters of a PeftModel, applied per row while `rows` is active."""

    def __init__(self, model: Any, adapters: Sequence[str]) -> None:
        """`adapters`: every adapter name a row may ask for (its index is the row's id)."""
        from peft.tuners.lora.layer import LoraLayer

        self.index = {name: i for i, name in enumerate(adapters)}
        self.ids: torch.Tensor | None = None
        self.single: int | None = None  # every row of the pass has this adapter id
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # a layer layout's (mask, scale) this pass
        for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
            layer.enable_adapters(False)  # PEFT's forward: the base layer only
            layer.register_forward_hook(_StackedLayer(self, layer, adapters), with_kwargs=True)

    @contextmanager
    def rows(self, adapters: Sequence[str | None]) -> Iterator[None]:
        """Within it, row i of a pass gets adapter `adapters[i]` (None: the base alone)."""
        ids = [self.index.get(a, len(self.index)) if a else len(self.index) for a in adapters]
        self.ids, self.single, self.cache = torch.tensor(ids), ids[0] if len(set(ids)) == 1 else None, {}
        try:
            yield
        finally:
            self.ids = self.single = None


class _StackedLayer:
    """One LoRA layer's adapters: each one's A and B (a pass of one adapter runs PEFT's own arithmetic), and all of
    them stacked, A (sum of ranks x in) and B (out x sum of ranks), with per adapter id its block mask and scaling
    (the last id: no adapter). Layers with the same adapters and ranks share a layout, whose per-row mask and
    scaling are made once a pass."""

    def __init__(self, stack: LoraStack, layer: Any, adapters: Sequence[str]) -> None:
        present = [a for a in adapters if a in layer.lora_A]
        self.stack = stack
        self.parts = {
            stack.index[a]: (layer.lora_A[a].weight, layer.lora_B[a].weight, float(layer.scaling[a])) for a in present
        }
        self.a = torch.cat([layer.lora_A[a].weight for a in present]) if present else None
        self.b = torch.cat([layer.lora_B[a].weight for a in present], dim=1) if present else None
        ranks = tuple((stack.index[a], layer.lora_A[a].weight.shape[0], float(layer.scaling[a])) for a in present)
        self.layout = hash(ranks)
        width = sum(rank for _, rank, _ in ranks)
        self.mask, self.scale = torch.zeros(len(adapters) + 1, width), torch.zeros(len(adapters) + 1)
        start = 0
        for index, rank, scaling in ranks:
            self.mask[index, start : start + rank], self.scale[index] = 1, scaling
            start += rank
        if self.a is not None:
            self.mask, self.scale = self.mask.to(self.a), self.scale.to(self.a)

    def __call__(self, module: Any, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor | None:
        stack = self.stack
        if stack.ids is None or self.a is None:
            return None
        x = args[0] if args else kwargs.get("x", kwargs.get("input"))
        if stack.single is not None:  # as PEFT computes it: result + lora_B(lora_A(x)) * scaling
            if stack.single not in self.parts:
                return None
            a, b, scaling = self.parts[stack.single]
            return (output + F.linear(F.linear(x.to(a.dtype), a), b) * scaling).to(output.dtype)
        if self.layout not in stack.cache:
            ids, shape = stack.ids.to(self.a.device), (len(stack.ids),) + (1,) * (x.dim() - 2)
            stack.cache[self.layout] = (self.mask[ids].view(*shape, -1), self.scale[ids].view(*shape, 1))
        mask, scale = stack.cache[self.layout]
        delta = F.linear(F.linear(x.to(self.a.dtype), self.a) * mask, self.b) * scale
        return (output + delta).to(output.dtype)
