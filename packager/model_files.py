"""The one vocabulary of file names: what an adapter, a base and a merged model folder hold, and what a trainer
leaves beside them that never ships."""

from __future__ import annotations

ADAPTER_CONFIG = "adapter_config.json"
LOCK_FILE = "packager.lock.json"
# Configuration that travels with a model (beside config.json, which every model folder has).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".onnx_data", ".onnx.data", ".pt")
# What a trainer's checkpoint-N/ holds beside the adapter: resumable state, never served (and mostly pickles).
TRAINER_STATE = (
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "training_args.bin",
    "trainer_state.json",
    "scaler.pt",
)


def is_weight_file(name: str) -> bool:
    """True for a file that holds tensors (one image layer each)."""
    return name.endswith(WEIGHT_SUFFIXES)
