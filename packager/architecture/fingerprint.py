"""What identifies a base model's architecture, wherever it lives: read from config.json alone, or from the
transformers config the meta-device model was built with (architecture/inspect.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a base model's architecture, independent of where it lives."""

    architectures: tuple[str, ...]
    model_type: str
    hidden_size: int | None
    num_hidden_layers: int | None
    vocab_size: int | None
    dtype: str | None
    tie_word_embeddings: bool


def fingerprint_from_config(config: dict) -> Fingerprint:
    """The base's Fingerprint straight from config.json (a config without tie_word_embeddings ties them, as
    transformers' PretrainedConfig defaults)."""
    dtype = config.get("torch_dtype") or config.get("dtype")
    return Fingerprint(
        architectures=tuple(config.get("architectures") or ()),
        model_type=config.get("model_type", ""),
        hidden_size=config.get("hidden_size"),
        num_hidden_layers=config.get("num_hidden_layers"),
        vocab_size=config.get("vocab_size"),
        dtype=str(dtype) if dtype is not None else None,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
    )


def fingerprint_of_model_config(config: Any) -> Fingerprint:
    """The Fingerprint of a transformers config (its text config's widths, for a vision-language model)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    dtype = getattr(config, "dtype", None)  # transformers 4.56+ (`torch_dtype` is its deprecated, warning alias)
    return Fingerprint(
        architectures=tuple(config.architectures or ()),
        model_type=config.model_type,
        hidden_size=getattr(text, "hidden_size", None),
        num_hidden_layers=getattr(text, "num_hidden_layers", None),
        vocab_size=getattr(text, "vocab_size", None),
        dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )
