"""What the sizing needs to know of a model, read from its config.json: every layer's attention (what one token
leaves in the KV cache there), the widths the activations and the sampler depend on, the experts, and, where the
config is ambiguous or new, which reading was taken (`notes`, printed with the plan).

No model names: each family's config keys are read by their meaning (`text_config` for vision-language models,
`layer_types` or transformers' own default for sliding-window layers, `kv_lora_rank` for multi-head latent
attention), and a key packager does not know is reported, not guessed silently."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TEXT_KEYS = ("text_config", "llm_config", "language_config")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
INTERMEDIATE_KEYS = ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim", "d_ff")
EXPERT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_top_k", "top_k", "num_selected_experts")
MOE_WIDTH_KEYS = ("moe_intermediate_size", "expert_intermediate_size")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
SLIDING = "sliding_attention"
# layer kinds whose cache does not grow with the sequence (linear attention, Mamba): a fixed state, not counted
STATE_LAYERS = ("linear_attention", "mamba", "conv", "recurrent")


@dataclass(frozen=True)
class LayerCache:
    """What one decoder layer keeps per token: `slots` cache slots (KV heads; 1 latent for MLA) of `width`
    elements each (key + value), over the last `window` tokens (None: all of them); `split` when tensor
    parallelism divides the slots between GPUs (MLA's latent is replicated on every GPU)."""

    slots: int
    width: int
    window: int | None = None
    split: bool = True

    def slots_per_gpu(self, tp: int) -> int:
        """Slots one GPU holds: an even share, or one replicated KV head where there are fewer than GPUs."""
        return max(1, self.slots // tp) if self.split else self.slots


@dataclass(frozen=True)
class ModelShape:
    """The model as the sizing sees it (one `LayerCache` per decoder layer, in order)."""

    layers: tuple[LayerCache, ...]
    heads: int
    kv_heads: int
    hidden: int
    intermediate: int
    vocab: int
    context: int | None
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    block_n: int | None = None  # a block-quantized checkpoint's output block (weight_block_size[0])
    notes: tuple[str, ...] = ()

    @property
    def moe(self) -> bool:
        """Whether the model routes tokens to experts."""
        return self.experts > 1


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (a vision-language model nests it)."""
    return next((config[k] for k in TEXT_KEYS if isinstance(config.get(k), dict)), config)


def first_int(config: dict[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of `names` the config sets to an integer (booleans are not sizes)."""
    return next((config[n] for n in names if isinstance(config.get(n), int) and not isinstance(config[n], bool)), None)


def model_shape(config: dict[str, Any], layer_types: list[str] | None = None) -> ModelShape:
    """The shape of the model `config` describes; `layer_types`: each layer's attention kind as transformers
    resolves it, where config.json leaves it to the config class's default."""
    text = text_config(config)
    heads = first_int(text, HEAD_KEYS) or 1
    kv_heads, kv_note = _kv_heads(text, heads)
    count = first_int(text, LAYER_KEYS) or 0
    cache, notes = _layer_caches(text, count, heads, kv_heads, layer_types or text.get("layer_types"))
    hidden = first_int(text, HIDDEN_KEYS) or 0
    experts = first_int(text, EXPERT_KEYS) or 0
    return ModelShape(
        layers=cache,
        heads=heads,
        kv_heads=kv_heads,
        hidden=hidden,
        intermediate=first_int(text, INTERMEDIATE_KEYS) or 4 * hidden,
        vocab=first_int(text, ("vocab_size", "padded_vocab_size")) or first_int(config, ("vocab_size",)) or 0,
        context=first_int(text, CONTEXT_KEYS) or first_int(config, CONTEXT_KEYS),
        experts=experts if experts > 1 else 0,
        experts_per_token=first_int(text, TOP_K_KEYS) or (2 if experts > 1 else 0),
        moe_intermediate=first_int(text, MOE_WIDTH_KEYS) or 0,
        block_n=_block_n(config),
        notes=(*kv_note, *notes),
    )


def _kv_heads(text: dict[str, Any], heads: int) -> tuple[int, tuple[str, ...]]:
    """KV heads by each family's name; multi-query models (GPT-BigCode, old Falcon) keep one."""
    named = first_int(text, KV_HEAD_KEYS)
    if named:
        return named, ()
    if text.get("multi_query") is True and not text.get("new_decoder_architecture"):
        return 1, ("multi-query attention: one KV head",)
    return heads, ()


def _layer_caches(
    text: dict[str, Any], count: int, heads: int, kv_heads: int, layer_types: Any
) -> tuple[tuple[LayerCache, ...], tuple[str, ...]]:
    if _is_mla(text):
        width = text["kv_lora_rank"] + text["qk_rope_head_dim"]
        note = (
            f"KV: multi-head latent attention, {text['kv_lora_rank']} + {text['qk_rope_head_dim']} elements per "
            "token and layer, the same on every GPU (not split by tensor parallelism)"
        )
        return (LayerCache(1, width, split=False),) * count, (note,)
    head_dim, dim_note = _head_dim(text, heads)
    value_dim = first_int(text, ("v_head_dim",)) or head_dim
    kinds, kind_notes = _kinds(text, count, layer_types)
    window = first_int(text, ("sliding_window", "attention_window_size"))
    caches = tuple(_cache(kind, kv_heads, head_dim + value_dim, window) for kind in kinds)
    return caches, (*dim_note, *kind_notes)


def _is_mla(text: dict[str, Any]) -> bool:
    return all(isinstance(text.get(k), int) for k in ("kv_lora_rank", "qk_rope_head_dim"))


def _head_dim(text: dict[str, Any], heads: int) -> tuple[int, tuple[str, ...]]:
    named = first_int(text, ("head_dim", "attention_head_dim", "kv_channels"))
    if named:
        return named, ()
    hidden = first_int(text, HIDDEN_KEYS) or 0
    return hidden // heads, (f"KV: no head_dim in the config: hidden {hidden} / {heads} heads = {hidden // heads}",)


def _kinds(text: dict[str, Any], count: int, layer_types: Any) -> tuple[list[str], tuple[str, ...]]:
    """Each layer's attention kind: `layer_types`, else every layer sliding where the config sets a window
    (vLLM applies `sliding_window` to every layer then), else full attention."""
    if isinstance(layer_types, list) and len(layer_types) >= count > 0:
        kinds = [str(k) for k in layer_types[:count]]
        sliding = sum(k == SLIDING for k in kinds)
        state = sum(k.startswith(STATE_LAYERS) for k in kinds)
        notes = (f"{sliding} of {count} layers keep only a sliding window (layer_types)",) if sliding else ()
        if state:
            notes += (f"{state} of {count} layers keep a fixed recurrent state, not a per-token cache (not counted)",)
        return kinds, notes
    if first_int(text, ("sliding_window",)) and text.get("use_sliding_window") is not False:
        return [SLIDING] * count, (f"every layer keeps a sliding window of {text['sliding_window']} tokens",)
    return ["full_attention"] * count, ()


def _cache(kind: str, kv_heads: int, width: int, window: int | None) -> LayerCache:
    if kind.startswith(STATE_LAYERS):
        return LayerCache(0, 0)
    return LayerCache(kv_heads, width, window if kind == SLIDING and window else None)


def _block_n(config: dict[str, Any]) -> int | None:
    """The output block of a block-quantized checkpoint (DeepSeek-style FP8: weight_block_size [128, 128])."""
    quant = config.get("quantization_config")
    block = quant.get("weight_block_size") if isinstance(quant, dict) else None
    return int(block[0]) if isinstance(block, list) and block and isinstance(block[0], int) else None


def held_tokens(layer: LayerCache, length: int, in_flight: int, block: int = 16) -> int:
    """Tokens of one `length`-token sequence a layer holds in vLLM's paged cache: all of them in whole blocks, or
    for a sliding window the window plus the tokens scheduled in one step, and one block more (the window need not
    start on a block boundary; vLLM's SlidingWindowSpec)."""
    if layer.window is None:
        return math.ceil(length / block) * block
    return (math.ceil(min(layer.window - 1 + in_flight, length) / block) + 1) * block
