"""What the base model is made of, read from its config by building it on the meta device (no weights)."""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass, field

import torch

from packager.errors import BaseNotFoundError, IncompatibleAdapterError
from packager.plan import Fingerprint
from packager.resolve.known_architectures import (
    INPUT_EMBEDDING,
    OUTPUT_EMBEDDING,
    fingerprint_from_config,
    known_module_kinds,
)


@dataclass(frozen=True)
class Architecture:
    """Module kinds by name (linear, conv1d, embedding, other) and the embedding layout."""

    fingerprint: Fingerprint
    module_kinds: dict[str, str] = field(repr=False)
    input_embedding: str | None
    output_embedding: str | None

    @property
    def tied(self) -> bool:
        """Whether the base ties its output embeddings to its input embeddings."""
        return self.fingerprint.tie_word_embeddings


def read_config(path: str) -> dict:
    """The folder's config.json as a dict; BaseNotFoundError when there is none."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise BaseNotFoundError(
            f"{path} has no config.json, so it is not a Hugging Face model folder; pass the right --base"
        )
    with open(config_path) as f:
        return json.load(f)


def inspect_architecture(path: str, tensors: dict | None = None) -> Architecture:
    """The base's module kinds and embedding layout: from the table of known families when the stored tensors
    match it (no transformers import), else by building the base on the meta device."""
    if tensors is not None:
        config = read_config(path)
        kinds = known_module_kinds(config, tensors)
        if kinds is not None:
            return Architecture(fingerprint_from_config(config), kinds, INPUT_EMBEDDING, OUTPUT_EMBEDDING)
    return inspect_meta_architecture(path)


def inspect_meta_architecture(path: str) -> Architecture:
    """Instantiate the base on the meta device to learn its module names and kinds (memoized per config)."""
    config_path = os.path.join(path, "config.json")
    stamp = os.stat(config_path).st_mtime_ns if os.path.isfile(config_path) else 0
    return _inspect_architecture(os.path.abspath(path), stamp)


@functools.lru_cache(maxsize=8)
def _inspect_architecture(path: str, config_stamp: int) -> Architecture:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    read_config(path)
    try:
        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise IncompatibleAdapterError(
            f"base at {path} is not a causal language model transformers knows ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:120]}); packager supports AutoModelForCausalLM architectures"
        ) from None
    names = {id(module): name for name, module in model.named_modules()}
    kinds = {name: _kind(module, Conv1D) for name, module in model.named_modules() if name}
    output = model.get_output_embeddings()
    return Architecture(
        fingerprint=_fingerprint(config),
        module_kinds=kinds,
        input_embedding=names.get(id(model.get_input_embeddings())),
        output_embedding=names.get(id(output)) if output is not None else None,
    )


def _kind(module: torch.nn.Module, conv1d: type) -> str:
    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, conv1d):
        return "conv1d"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    return "other"


def _fingerprint(config) -> Fingerprint:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    dtype = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None)
    return Fingerprint(
        architectures=tuple(config.architectures or ()),
        model_type=config.model_type,
        hidden_size=getattr(text, "hidden_size", None),
        num_hidden_layers=getattr(text, "num_hidden_layers", None),
        vocab_size=getattr(text, "vocab_size", None),
        dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )
