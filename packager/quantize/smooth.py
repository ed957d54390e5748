"""SmoothQuant (Xiao et al., 2023), as llm-compressor's SmoothQuantModifier applies it before W8A8 quantization:
activations with outlier channels are hard to quantize per token, weights are easy, so each input channel j of a
group of Linears that read one normalized input is scaled by s_j = max|X_j|^a / max|W_j|^(1-a): the norm's weight
is divided by s (the input shrinks) and the Linears' columns multiplied by s (the product is unchanged).

The groups are llm-compressor's default mappings for Llama-style decoders: q/k/v after input_layernorm, gate/up
after post_attention_layernorm, strength 0.5. On SmolLM2-135M, w8a8 round-to-nearest costs +4.5% perplexity and
+1.7% smoothed (bench/RESULTS.md); the remaining loss is down_proj's input, which no default mapping smooths.
"""

from __future__ import annotations

import torch

MAPPINGS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
)


def smoothing_groups(layer_prefix: str, modules: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The (norm, Linears) groups of the decoder layer named `layer_prefix` whose modules all exist."""
    groups = []
    for norm, linears in MAPPINGS:
        names = tuple(f"{layer_prefix}.{linear}" for linear in linears)
        if f"{layer_prefix}.{norm}" in modules and all(n in modules for n in names):
            groups.append((f"{layer_prefix}.{norm}", names))
    return groups


def smoothing_scales(activation_max: torch.Tensor, weights: list[torch.Tensor], strength: float) -> torch.Tensor:
    """s_j = max|X_j|^a / max|W_j|^(1-a), the weight maximum taken over every Linear of the group."""
    weight_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)
    return (activation_max.clamp(min=1e-5).pow(strength) / weight_max.pow(1 - strength)).clamp(min=1e-5)
