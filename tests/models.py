"""Tiny real models and adapters for the tests, built with transformers and PEFT (no hub)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 96,
    "max_position_embeddings": 64,
}


def llama_config(**overrides) -> LlamaConfig:
    return LlamaConfig(**{**TINY, **overrides})


def qwen2_config(**overrides) -> Qwen2Config:
    return Qwen2Config(**{**TINY, **overrides})


def gpt2_config(**overrides) -> GPT2Config:
    return GPT2Config(**{"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 96, "n_positions": 64, **overrides})


def save_base(config, path: str, dtype: torch.dtype = torch.float32, seed: int = 0, **save_kwargs) -> str:
    """A randomly initialised model of `config`, saved in `dtype` as safetensors."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    model.save_pretrained(path, safe_serialization=True, **save_kwargs)
    return path


def with_random_biases(base: str, path: str, model_class=AutoModelForCausalLM) -> str:
    """`base` saved to `path` with its biases randomized: fresh GPT-2 and BERT biases are zero, and a test of
    scaling them would prove nothing."""
    torch.manual_seed(5)
    model = model_class.from_pretrained(base, dtype="auto")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(path)
    return path


def save_adapter(
    base_path: str,
    path: str,
    seed: int = 1,
    resize_to: int | None = None,
    safe_serialization: bool = True,
    **lora_kwargs,
) -> str:
    """A LoRA adapter with random (non-zero) A and B, trained-looking, saved like PEFT users save it."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if resize_to:
        model.resize_token_embeddings(resize_to)
    kwargs = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, **lora_kwargs}
    peft_model = get_peft_model(model, LoraConfig(**kwargs))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if param.requires_grad and ("lora_" not in name or "lora_B.bias" in name):
                param.add_(torch.randn_like(param) * 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(path, safe_serialization=safe_serialization)
    return path


def peft_merged_state(base_path: str, adapter_path: str, dtype: torch.dtype, resize_to: int | None = None) -> dict:
    """The library path: from_pretrained + PeftModel + merge_and_unload, as a state dict."""
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if resize_to:
        model.resize_token_embeddings(resize_to)
    merged = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def loaded_state(path: str, dtype: torch.dtype) -> dict:
    """A merged output folder loaded back through transformers, as a state dict."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def saved_tensors(path: str) -> dict:
    """Every tensor stored in a model folder's safetensors files."""
    tensors = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(path, name)))
    return tensors


def assert_states_equal(expected: dict, actual: dict) -> None:
    """Same keys, same dtypes, bit-identical values."""
    assert expected.keys() == actual.keys(), set(expected) ^ set(actual)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, (name, actual[name].dtype, tensor.dtype)
        assert torch.equal(actual[name], tensor), (
            f"{name}: max diff {(actual[name].float() - tensor.float()).abs().max()}"
        )


def fake_hf_cache(hf_home: Path, repo_id: str, source: str) -> str:
    """Lay `source` out as huggingface_hub caches a snapshot: blobs named by sha256, symlinked snapshots."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in os.listdir(source):
        data = Path(source, name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", digest), snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit
