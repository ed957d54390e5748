"""Whether vLLM's image reads a model's tokenizer as packager does. vLLM 0.32 brings transformers 5, which builds a
`LlamaTokenizer` as a SentencePiece tokenizer (a Metaspace pre-tokenizer) whatever its tokenizer.json says. A
byte-level BPE saved under that class name (what transformers' GGUF conversion writes for SmolLM2 and Llama 3)
then tokenizes every prompt differently there than in transformers 4.57, and the model answers nonsense
(measured: "The capital of France is" -> "_no_cuisine_" instead of " Paris.")."""

from __future__ import annotations

import os
from typing import Any

from packager.runtime.files import read_json

SENTENCEPIECE_CLASSES = frozenset({"LlamaTokenizer", "LlamaTokenizerFast"})


def misread_tokenizer(folder: str) -> str | None:
    """Why transformers 5 would read the folder's tokenizer differently, or None when it reads it as saved."""
    config = read_json(os.path.join(folder, "tokenizer_config.json"))
    tokenizer = read_json(os.path.join(folder, "tokenizer.json"))
    if not isinstance(config, dict) or not isinstance(tokenizer, dict):
        return None
    named = config.get("tokenizer_class")
    if named not in SENTENCEPIECE_CLASSES or not _byte_level(tokenizer.get("pre_tokenizer")):
        return None
    return (
        f"{os.path.join(folder, 'tokenizer_config.json')} names {named}, but its tokenizer.json is a byte-level BPE; "
        "vLLM's transformers 5 rebuilds a LlamaTokenizer as SentencePiece and would tokenize every prompt "
        'differently (set "tokenizer_class": "PreTrainedTokenizerFast" there to serve it with vLLM)'
    )


def _byte_level(pre_tokenizer: Any) -> bool:
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_byte_level(p) for p in pre_tokenizer.get("pretokenizers") or [])
    return pre_tokenizer.get("type") == "ByteLevel"
