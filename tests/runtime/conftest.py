"""Tiny models for the runtime tests: a Llama base, a second base with other weights, two LoRA adapters."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from packager.demo import build_tokenizer
from packager.runtime.fingerprint import full_sha256, sample_sha256


def _save_base(path: Path, tokenizer, seed: int) -> str:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return str(path)


def _save_adapter(base: str, path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(model, config).save_pretrained(path)
    return str(path)


def make_lock(base: str) -> dict:
    """A lock like packager writes, with sample_sha256 for weight files."""
    files = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        entry = {"path": name, "size": os.path.getsize(path), "sha256": full_sha256(path)}
        if name.endswith(".safetensors"):
            entry["sample_sha256"] = sample_sha256(path)
        files.append(entry)
    fingerprint = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64}
    return {
        "base": {"path": "/src/tiny-llama", "repo_id": "acme/tiny-llama", "fingerprint": fingerprint, "files": files}
    }


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths: base, other_base (same config, other weights), adapter_a, adapter_b, merged (base + adapter_a), lock."""
    root = tmp_path_factory.mktemp("runtime")
    tokenizer = build_tokenizer(str(root / "tokenizer"))
    base = _save_base(root / "base", tokenizer, seed=0)
    paths = {
        "base": base,
        "other_base": _save_base(root / "other_base", tokenizer, seed=1),
        "adapter_a": _save_adapter(base, root / "adapter_a", seed=1),
        "adapter_b": _save_adapter(base, root / "adapter_b", seed=2),
        "merged": str(root / "merged"),
        "lock": str(root / "packager.lock.json"),
    }
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), paths["adapter_a"])
    merged.merge_and_unload().save_pretrained(paths["merged"], safe_serialization=True)
    tokenizer.save_pretrained(paths["merged"])
    Path(paths["lock"]).write_text(json.dumps(make_lock(base)))
    return paths


@pytest.fixture
def base_copy(tiny: dict[str, str], tmp_path: Path) -> str:
    """A private copy of the base to break."""
    return shutil.copytree(tiny["base"], tmp_path / "base")
