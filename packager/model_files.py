"""The one vocabulary of file names: what an adapter, a base and a merged model folder hold, and what a trainer
leaves beside them that never ships."""

from __future__ import annotations

import json
import os

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


# A vision-language model's processor: how images become pixel values and placeholder tokens.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")
# sentence-transformers' description of an embedding model: its modules (Transformer, Pooling, Normalize) and
# their settings; each Pooling module's config.json sits in its own folder (e.g. 1_Pooling/config.json)
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def sentence_transformers_files(folder: str) -> list[str]:
    """The sentence-transformers files a model folder holds, relative to it (pooling configs included)."""
    found = [n for n in SENTENCE_TRANSFORMERS_FILES if os.path.isfile(os.path.join(folder, n))]
    for module in _modules(folder):
        path = f"{module.get('path', '')}/config.json"
        if str(module.get("type", "")).endswith(".Pooling") and os.path.isfile(os.path.join(folder, path)):
            found.append(path)
    return found


def _modules(folder: str) -> list[dict]:
    try:
        with open(os.path.join(folder, "modules.json")) as f:
            modules = json.load(f)
    except (OSError, ValueError):
        return []
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def is_weight_file(name: str) -> bool:
    """True for a file that holds tensors (one image layer each)."""
    return name.endswith(WEIGHT_SUFFIXES)


def folder_size(folder: str, suffixes: tuple[str, ...]) -> int:
    """Bytes of the weight files in `folder` (what quantization shrinks)."""
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(suffixes))
