"""LitGPT fine-tune runs made with LitGPT's own code on a tiny Hugging Face Llama: what `litgpt finetune_lora`
leaves in out/final, and what LitGPT's merge_lora + convert_lit_checkpoint make of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

LORA = {"lora_r": 4, "lora_alpha": 8, "lora_query": True, "lora_key": False, "lora_value": True,
        "lora_projection": True, "lora_mlp": True, "lora_head": True}  # fmt: skip


def lit_config(**lora):
    from litgpt.lora import Config

    return Config(
        name="tiny-llama", hf_config={"org": "tiny", "name": "llama"}, block_size=64, vocab_size=96,
        padded_vocab_size=96, n_layer=2, n_head=4, n_query_groups=2, n_embd=64, intermediate_size=128,
        bias=False, norm_class_name="RMSNorm", norm_eps=1e-6, mlp_class_name="LLaMAMLP", parallel_residual=False,
        rotary_percentage=1.0, rope_base=10000, **lora,
    )  # fmt: skip


def save_run(base: str, out: str, lora: dict) -> tuple[str, dict]:
    """What `litgpt finetune_lora` leaves in out/final (LoRA factors trained-looking), and LitGPT's own merged
    model converted back to Hugging Face names."""
    from litgpt.lora import GPT, lora_filter, merge_lora_weights
    from litgpt.scripts.convert_hf_checkpoint import copy_weights_hf_llama
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama
    from litgpt.utils import save_config

    config = lit_config(**lora)
    lit_base: dict = {}
    copy_weights_hf_llama(config, {}, lit_base, load_file(os.path.join(base, "model.safetensors")))
    model = GPT(config)
    model.load_state_dict(lit_base, strict=False)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    final = os.path.join(out, "final")
    os.makedirs(final)
    torch.save(
        {"model": {k: v for k, v in model.state_dict().items() if lora_filter(k, v)}}, f"{final}/lit_model.pth.lora"
    )
    save_config(config, Path(final))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):  # as copy_config_files does
        if os.path.isfile(os.path.join(base, name)):
            shutil.copy(os.path.join(base, name), final)
    with open(os.path.join(final, "hyperparameters.yaml"), "w") as f:
        yaml.safe_dump({**lora, "checkpoint_dir": "checkpoints/tiny/llama", "precision": "32-true"}, f)
    merge_lora_weights(model)
    merged = {k.replace("linear.", ""): v for k, v in model.state_dict().items() if not lora_filter(k, v)}
    hf: dict = {}
    copy_weights_llama(config, hf, merged)
    return out, hf
