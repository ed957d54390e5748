"""Real model shapes as sparse folders: config.json with the values of the model's own card, and one safetensors
file whose header lists every tensor with the dtype and shape the published checkpoint stores (FP8 blocks and
their scales, MXFP4 blocks, BF16 attention beside FP8 MLPs), its data a hole (no disk, no time). The sizing reads
them as it reads any base: the config and the headers. Where a value is from memory rather than a copy of the
published file, the builder says so."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

from packager.io.safetensors_format import element_size, encode_header

Entry = tuple[str, str, tuple[int, ...]]


def write_sparse(folder: str, config: dict, entries: list[Entry]) -> int:
    """The folder with config.json and model.safetensors (header + hole); returns the data's size in bytes."""
    os.makedirs(folder, exist_ok=True)
    header = encode_header(entries, {"format": "pt"})
    size = sum(math.prod(shape) * element_size(dtype) for _, dtype, shape in entries)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(header)
        f.truncate(len(header) + size)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return size


def linear(name: str, out: int, inp: int, fmt: str = "bf16", bias: bool = False) -> Iterator[Entry]:
    """A Linear layer's weight as stored: bf16; fp8 with a per-channel scale; fp8 with 128x128 block scales."""
    if fmt == "bf16":
        yield f"{name}.weight", "BF16", (out, inp)
    elif fmt == "fp8-channel":
        yield f"{name}.weight", "F8_E4M3", (out, inp)
        yield f"{name}.weight_scale", "F32", (out, 1)
    elif fmt == "fp8-block":
        yield f"{name}.weight", "F8_E4M3", (out, inp)
        yield f"{name}.weight_scale_inv", "F32", (math.ceil(out / 128), math.ceil(inp / 128))
    if bias:
        yield f"{name}.bias", "BF16", (out,)


def norm(name: str, width: int) -> Entry:
    return f"{name}.weight", "BF16", (width,)


def llama(cfg: dict, mlp_fmt=lambda layer: "bf16", attn_fmt: str = "bf16", prefix: str = "model") -> list[Entry]:
    """A Llama-family decoder (GQA attention, SwiGLU MLP); `mlp_fmt(layer)`: each MLP's storage."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or h // heads
    entries = [(f"{prefix}.embed_tokens.weight", "BF16", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.layers.{n}"
        for proj, out, inp in (("q", heads * d, h), ("k", kv * d, h), ("v", kv * d, h), ("o", h, heads * d)):
            entries += linear(f"{p}.self_attn.{proj}_proj", out, inp, attn_fmt)
        for proj, out, inp in (("gate", i, h), ("up", i, h), ("down", h, i)):
            entries += linear(f"{p}.mlp.{proj}_proj", out, inp, mlp_fmt(n))
        entries += [norm(f"{p}.input_layernorm", h), norm(f"{p}.post_attention_layernorm", h)]
    entries.append(norm(f"{prefix}.norm", h))
    if not cfg.get("tie_word_embeddings"):
        entries.append(("lm_head.weight", "BF16", (cfg["vocab_size"], h)))
    return entries


# Llama-3.1 (meta-llama/Llama-3.1-*-Instruct config.json; 8B confirmed from copies of the file, 70B/405B the same
# family values with their widths)
def llama31(hidden: int, intermediate: int, layers: int, heads: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
        "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rms_norm_eps": 1e-05,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip


LLAMA_8B = llama31(4096, 14336, 32, 32)
LLAMA_70B = llama31(8192, 28672, 80, 64)
LLAMA_405B = llama31(16384, 53248, 126, 128)


def llama_405b_fp8() -> tuple[dict, list[Entry]]:
    """meta-llama/Llama-3.1-405B-Instruct-FP8 (fbgemm_fp8): FP8 MLPs with per-channel scales; attention, the first
    and last layers' MLPs and lm_head in BF16 (the module list from memory; vLLM loads 57.75 GiB of it per GPU at
    tensor parallel 8, vllm #6746, which the sizing is checked against)."""
    config = {**LLAMA_405B, "quantization_config": {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}}
    last = LLAMA_405B["num_hidden_layers"] - 1
    return config, llama(LLAMA_405B, mlp_fmt=lambda n: "bf16" if n in (0, last) else "fp8-channel")


def llama_70b_fp8() -> tuple[dict, list[Entry]]:
    """An FP8 Llama-3.3-70B (every Linear but lm_head in FP8 with per-channel scales: "BF16 · F8_E4M3")."""
    config = {**LLAMA_70B, "quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized"}}
    return config, llama(LLAMA_70B, mlp_fmt=lambda n: "fp8-channel", attn_fmt="fp8-channel")


MIXTRAL_8X7B = {  # mistralai/Mixtral-8x7B-Instruct-v0.1 config.json (confirmed from copies of the file)
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768, "rope_theta": 1e6,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip


def mixtral(cfg: dict) -> list[Entry]:
    h, i, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * 128
    entries = [("model.embed_tokens.weight", "BF16", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for proj, out, inp in (("q", h, h), ("k", kv, h), ("v", kv, h), ("o", h, h)):
            entries += linear(f"{p}.self_attn.{proj}_proj", out, inp)
        entries.append((f"{p}.block_sparse_moe.gate.weight", "BF16", (cfg["num_local_experts"], h)))
        for e in range(cfg["num_local_experts"]):
            for w, out, inp in (("w1", i, h), ("w2", h, i), ("w3", i, h)):
                entries += linear(f"{p}.block_sparse_moe.experts.{e}.{w}", out, inp)
        entries += [norm(f"{p}.input_layernorm", h), norm(f"{p}.post_attention_layernorm", h)]
    return [*entries, norm("model.norm", h), ("lm_head.weight", "BF16", (cfg["vocab_size"], h))]


# Qwen/Qwen3-235B-A22B-FP8 (sizes confirmed from two independent configs; block FP8 as the recipe says)
QWEN3_235B_FP8 = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 4096,
    "intermediate_size": 12288, "moe_intermediate_size": 1536, "num_hidden_layers": 94, "num_attention_heads": 64,
    "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "vocab_size": 151936,
    "max_position_embeddings": 40960, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
}  # fmt: skip


def qwen3_moe(cfg: dict, fmt: str = "fp8-block") -> list[Entry]:
    h, w, d = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["head_dim"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    entries = [("model.embed_tokens.weight", "BF16", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for proj, out, inp in (("q", heads * d, h), ("k", kv * d, h), ("v", kv * d, h), ("o", h, heads * d)):
            entries += linear(f"{p}.self_attn.{proj}_proj", out, inp, fmt)
        entries += [norm(f"{p}.self_attn.q_norm", d), norm(f"{p}.self_attn.k_norm", d)]
        entries.append((f"{p}.mlp.gate.weight", "BF16", (cfg["num_experts"], h)))
        for e in range(cfg["num_experts"]):
            for proj, out, inp in (("gate", w, h), ("up", w, h), ("down", h, w)):
                entries += linear(f"{p}.mlp.experts.{e}.{proj}_proj", out, inp, fmt)
        entries += [norm(f"{p}.input_layernorm", h), norm(f"{p}.post_attention_layernorm", h)]
    return [*entries, norm("model.norm", h), ("lm_head.weight", "BF16", (cfg["vocab_size"], h))]


DEEPSEEK_V3 = {  # deepseek-ai/DeepSeek-V3 config.json (confirmed: README_WEIGHTS and copies of the file)
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
    "max_position_embeddings": 163840, "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
}  # fmt: skip


def deepseek_v3(cfg: dict) -> list[Entry]:
    """Every Linear in FP8 with 128x128 block scales; layer 61 is the multi-token-prediction module vLLM does not
    load (11.5B parameters)."""
    h, heads, fp8 = cfg["hidden_size"], cfg["num_attention_heads"], "fp8-block"
    nope, rope, v, kv, q = (cfg[k] for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank",
                                             "q_lora_rank"))  # fmt: skip
    entries = [("model.embed_tokens.weight", "BF16", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"] + cfg["num_nextn_predict_layers"]):
        p = f"model.layers.{n}"
        entries += linear(f"{p}.self_attn.q_a_proj", q, h, fp8)
        entries += [norm(f"{p}.self_attn.q_a_layernorm", q), norm(f"{p}.self_attn.kv_a_layernorm", kv)]
        entries += linear(f"{p}.self_attn.q_b_proj", heads * (nope + rope), q, fp8)
        entries += linear(f"{p}.self_attn.kv_a_proj_with_mqa", kv + rope, h, fp8)
        entries += linear(f"{p}.self_attn.kv_b_proj", heads * (nope + v), kv, fp8)
        entries += linear(f"{p}.self_attn.o_proj", h, heads * v, fp8)
        entries += _deepseek_mlp(cfg, p, n)
        entries += [norm(f"{p}.input_layernorm", h), norm(f"{p}.post_attention_layernorm", h)]
        if n >= cfg["num_hidden_layers"]:
            entries += [norm(f"{p}.enorm", h), norm(f"{p}.hnorm", h), norm(f"{p}.shared_head.norm", h)]
            entries += linear(f"{p}.eh_proj", h, 2 * h)
    return [*entries, norm("model.norm", h), ("lm_head.weight", "BF16", (cfg["vocab_size"], h))]


def _deepseek_mlp(cfg: dict, p: str, n: int) -> list[Entry]:
    h, fp8 = cfg["hidden_size"], "fp8-block"
    if n < cfg["first_k_dense_replace"]:
        i = cfg["intermediate_size"]
        return [e for proj, o, k in (("gate", i, h), ("up", i, h), ("down", h, i))
                for e in linear(f"{p}.mlp.{proj}_proj", o, k, fp8)]  # fmt: skip
    w, experts = cfg["moe_intermediate_size"], cfg["n_routed_experts"]
    entries = [(f"{p}.mlp.gate.weight", "BF16", (experts, h)), (f"{p}.mlp.gate.e_score_correction_bias", "F32",
                                                                 (experts,))]  # fmt: skip
    shared = w * cfg["n_shared_experts"]
    for name, width in [*((f"experts.{e}", w) for e in range(experts)), ("shared_experts", shared)]:
        for proj, o, k in (("gate", width, h), ("up", width, h), ("down", h, width)):
            entries += linear(f"{p}.mlp.{name}.{proj}_proj", o, k, fp8)
    return entries


GPT_OSS_120B = {  # openai/gpt-oss-120b config.json (sizes and layer_types confirmed; window and vocab from memory)
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
    "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 128, "num_experts_per_tok": 4, "experts_per_token": 4, "vocab_size": 201088,
    "max_position_embeddings": 131072, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 18, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
}  # fmt: skip


def gpt_oss(cfg: dict) -> list[Entry]:
    """Experts as MXFP4 blocks (two FP4 values a byte, a U8 E8M0 scale per 32), the rest BF16 (about 65 GB)."""
    h, i, heads, kv, d, e = (cfg[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                              "num_key_value_heads", "head_dim", "num_local_experts"))  # fmt: skip
    entries = [("model.embed_tokens.weight", "BF16", (cfg["vocab_size"], h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for proj, out, inp in (("q", heads * d, h), ("k", kv * d, h), ("v", kv * d, h), ("o", h, heads * d)):
            entries += linear(f"{p}.self_attn.{proj}_proj", out, inp, bias=True)
        entries.append((f"{p}.self_attn.sinks", "BF16", (heads,)))
        entries += linear(f"{p}.mlp.router", e, h, bias=True)
        for proj, out, inp in (("gate_up_proj", 2 * i, h), ("down_proj", h, i)):
            entries += [(f"{p}.mlp.experts.{proj}_blocks", "U8", (e, out, inp // 32, 16)),
                        (f"{p}.mlp.experts.{proj}_scales", "U8", (e, out, inp // 32)),
                        (f"{p}.mlp.experts.{proj}_bias", "BF16", (e, out))]  # fmt: skip
        entries += [norm(f"{p}.input_layernorm", h), norm(f"{p}.post_attention_layernorm", h)]
    return [*entries, norm("model.norm", h), ("lm_head.weight", "BF16", (cfg["vocab_size"], h))]


GEMMA3_27B = {  # google/gemma-3-27b-it config.json: text and vision sizes from memory of the card's file
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
    "text_config": {"model_type": "gemma3_text", "hidden_size": 5376, "intermediate_size": 21504,
                    "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                    "sliding_window": 1024, "sliding_window_pattern": 6, "vocab_size": 262208,
                    "max_position_embeddings": 131072, "query_pre_attn_scalar": 168,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14},
    "mm_tokens_per_image": 256,
}  # fmt: skip


def gemma3(cfg: dict) -> list[Entry]:
    """The language model (tied embeddings, q/k norms, four norms a layer) and the SigLIP vision tower."""
    text = cfg["text_config"]
    entries = llama({**text, "tie_word_embeddings": True}, prefix="language_model.model")
    for n in range(text["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}"
        entries += [norm(f"{p}.self_attn.q_norm", 128), norm(f"{p}.self_attn.k_norm", 128)]
        entries += [norm(f"{p}.pre_feedforward_layernorm", 5376), norm(f"{p}.post_feedforward_layernorm", 5376)]
    vision, width = cfg["vision_config"], cfg["vision_config"]["hidden_size"]
    tower = "vision_tower.vision_model"
    entries += [(f"{tower}.embeddings.patch_embedding.weight", "BF16", (width, 3, 14, 14)),
                (f"{tower}.embeddings.position_embedding.weight", "BF16", ((896 // 14) ** 2, width))]  # fmt: skip
    for n in range(vision["num_hidden_layers"]):
        p = f"{tower}.encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            entries += linear(f"{p}.self_attn.{proj}", width, width, bias=True)
        entries += linear(f"{p}.mlp.fc1", vision["intermediate_size"], width, bias=True)
        entries += linear(f"{p}.mlp.fc2", width, vision["intermediate_size"], bias=True)
    return [*entries, ("multi_modal_projector.mm_input_projection_weight", "BF16", (width, 5376))]
