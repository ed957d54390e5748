"""A tiny demo base model, tokenizer and LoRA adapter, generated locally (no model hub needed)."""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def demo_corpus() -> str:
    """The text the demo tokenizer is trained on (packager/data/demo_corpus.txt)."""
    return resources.files("packager.data").joinpath("demo_corpus.txt").read_text()


def build_tokenizer(path: str, vocab_size: int = 384):
    """Train a small byte-level BPE tokenizer on the shipped corpus and save it in HF format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(demo_corpus().splitlines(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def build_base(path: str, seed: int = 0, hidden_size: int = 64, layers: int = 2, heads: int = 2) -> str:
    """A random tiny Llama with the demo tokenizer, saved as safetensors; its head size (hidden/2: 32 by default)
    is one vLLM's CPU kernels support, so the demo is served by vLLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    return path


def build_adapter(base_path: str, path: str, seed: int = 1, r: int = 8) -> str:
    """A LoRA adapter on every attention and MLP projection, with non-zero B so it changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(path)
    _set_base_hint(path, os.path.abspath(base_path))
    return path


def _set_base_hint(adapter_path: str, base: str) -> None:
    config_path = os.path.join(adapter_path, "adapter_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["base_model_name_or_path"] = base
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)


DEMO_VERSION = "2"  # bump when the demo's base or adapter changes: older ones are rebuilt


def build_demo(root: str) -> tuple[str, str]:
    """Write root/base and root/adapter (skipped when this version of the demo is already there); return their
    paths."""
    base, adapter = os.path.join(root, "base"), os.path.join(root, "adapter")
    stamp = os.path.join(root, ".packager-demo")
    if os.path.isfile(stamp) and Path(stamp).read_text() == DEMO_VERSION:
        return base, adapter
    for folder in (base, adapter):
        shutil.rmtree(folder, ignore_errors=True)  # an older demo: its shapes may not be what vLLM serves
    build_adapter(build_base(base), adapter)
    Path(stamp).write_text(DEMO_VERSION)
    return base, adapter
