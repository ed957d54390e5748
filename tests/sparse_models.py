"""Llama models of any size that cost no disk and no time to make: the safetensors header is written and the data
left as a hole in a sparse file (zeros when read). With a small LoRA written beside it by hand, they let a test
merge or quantize a model many times the size of what the streaming steps keep in memory, and measure that."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

from packager.io.safetensors_format import element_size, encode_header


def llama_shapes(
    hidden: int, intermediate: int, layers: int, vocab: int, kv_heads: int | None = None, heads: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama (untied; full multi-head attention unless `kv_heads` of `heads` say otherwise)."""
    heads = heads or hidden // 64
    kv_width = (kv_heads or heads) * (hidden // heads)
    widths = {"q_proj": (hidden, hidden), "k_proj": (kv_width, hidden), "v_proj": (kv_width, hidden)}
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        layer = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{layer}.self_attn.{proj}.weight"] = widths.get(proj, (hidden, hidden))
        shapes[f"{layer}.mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[f"{layer}.mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[f"{layer}.mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[f"{layer}.input_layernorm.weight"] = (hidden,)
        shapes[f"{layer}.post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


LLAMA3 = {  # hidden, intermediate, layers, heads, KV heads, vocab: the Llama-3.1 family
    "8b": (4096, 14336, 32, 32, 8, 128256),
    "70b": (8192, 28672, 80, 64, 8, 128256),
    "405b": (16384, 53248, 126, 128, 8, 128256),
}


def llama3_config(name: str) -> dict:
    """The config.json sizes of a Llama-3.1 model (LLAMA3's names)."""
    hidden, intermediate, layers, heads, kv, vocab = LLAMA3[name]
    return {"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab}  # fmt: skip


def llama3_tensors(name: str, dtype: str = "BF16") -> dict:
    """Its tensors as a header lists them: name -> (dtype, shape), no data."""
    from types import SimpleNamespace

    hidden, intermediate, layers, heads, kv, vocab = LLAMA3[name]
    shapes = llama_shapes(hidden, intermediate, layers, vocab, kv_heads=kv, heads=heads)
    return {key: SimpleNamespace(dtype=dtype, shape=shape) for key, shape in shapes.items()}


def save_sparse_llama(
    path: str, hidden: int, intermediate: int, layers: int, vocab: int, dtype: str = "BF16", **shape
) -> int:
    """A Llama folder whose one weights file is a header plus a hole; returns the weights' size in bytes. `shape`:
    heads, kv_heads (grouped-query attention), context (max_position_embeddings, default 256)."""
    os.makedirs(path, exist_ok=True)
    heads, kv_heads = shape.get("heads") or hidden // 64, shape.get("kv_heads")
    shapes = llama_shapes(hidden, intermediate, layers, vocab, kv_heads=kv_heads, heads=heads)
    header = encode_header([(name, dtype, shape) for name, shape in shapes.items()], {"format": "pt"})
    size = sum(torch.Size(s).numel() for s in shapes.values()) * element_size(dtype)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(header)
        f.truncate(len(header) + size)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads or heads, "vocab_size": vocab,
        "max_position_embeddings": shape.get("context", 256),
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16" if dtype == "BF16" else "float32",
    }  # fmt: skip
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return size


def save_lora_by_hand(
    path: str, base: str, hidden: int, layers: int, r: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj")
) -> str:
    """A PEFT LoRA on every one of `targets` (square projections), with random factors, written as PEFT does."""
    os.makedirs(path, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        for proj in targets:
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, hidden, generator=generator) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(hidden, r, generator=generator) * 0.01
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": r, "lora_alpha": 2 * r,
        "target_modules": list(targets), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
    }  # fmt: skip
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    return path


# Started from a small launcher: Linux keeps a process's peak RSS across exec, so a command forked straight from a
# big process (pytest, with torch loaded) would report that process's size as its own peak.
LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
output = process.stdout.read()
_pid, status, usage = os.wait4(process.pid, 0)
sys.stderr.buffer.write(output[-2000:])
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_bytes(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run `argv` to completion (it must succeed) and return its peak resident memory, from the kernel's rusage."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True)
    code, kib = map(int, done.stdout.split())
    assert code == 0, done.stderr
    return kib * 1024
