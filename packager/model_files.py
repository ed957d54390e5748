"""The one vocabulary of file names: what an adapter, a base and a merged model folder hold, and what a trainer
leaves beside them that never ships."""

from __future__ import annotations

ADAPTER_CONFIG = "adapter_config.json"
LOCK_FILE = "packager.lock.json"
# Configuration that travels with a model (beside config.json, which every model folder has).
CONFIG_FILES = ("config.json", "generation_config.json")
# Everything a tokenizer (and its chat template) may be saved as: fast tokenizers, SentencePiece (Llama, T5,
# XLM-R), WordPiece (BERT) and byte-level BPE vocabularies, and both chat-template files transformers writes.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
# Any one of these means a folder ships its own tokenizer (the config files alone do not).
TOKENIZER_VOCABULARIES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.txt")
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
