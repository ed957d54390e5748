"""Find an adapter (or the newest checkpoint of a training run) and read what it holds, without loading weights."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from packager.errors import AdapterError, UnsafeFormatError
from packager.io.pickle_state import load_pickle_state
from packager.io.safetensors_format import DTYPE_NAMES, read_header
from packager.model_files import TOKENIZER_FILES, TOKENIZER_VOCABULARIES
from packager.plan import PROMPT_LEARNING_TYPES
from packager.resolve.folders import CONFIG_FILE, find_adapter

SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt")
KEY_PREFIX = "base_model.model."


@dataclass(frozen=True)
class AdapterTensor:
    """Dtype and shape of one adapter tensor, as its file's header gives them."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Adapter:
    """An adapter folder as found on disk: its config and the names, shapes and dtypes of its tensors."""

    path: str
    checkpoint: int | None
    config: dict[str, Any] = field(repr=False)
    weights_file: str
    tensors: dict[str, AdapterTensor] = field(repr=False)
    has_tokenizer: bool

    @property
    def peft_type(self) -> str:
        """The config's peft_type, upper-cased (e.g. LORA)."""
        return str(self.config.get("peft_type", "")).upper()

    @property
    def is_prompt_learning(self) -> bool:
        """Whether the adapter adds virtual tokens or prefixes (prompt, prefix, P-tuning...): served, never merged."""
        return self.peft_type in PROMPT_LEARNING_TYPES

    @property
    def base_hint(self) -> str | None:
        """The base the config names (base_model_name_or_path), or None."""
        return self.config.get("base_model_name_or_path") or None

    @property
    def revision(self) -> str | None:
        """The base revision the config names, or None."""
        return self.config.get("revision") or None

    @property
    def is_pickle(self) -> bool:
        """Whether the weights are a pickle file (.bin/.pt) rather than safetensors."""
        return not self.weights_file.endswith(".safetensors")

    @property
    def tokenizer_files(self) -> list[str]:
        """The tokenizer files present in the adapter folder."""
        return [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(self.path, n))]


def load_adapter(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter:
    """Locate and describe an adapter; reads headers only (pickle weights only with `allow_pickle`)."""
    folder, chosen = find_adapter(path, checkpoint)
    config = _read_config(folder)
    weights = _weights_file(folder, allow_pickle)
    tensors = _read_pickle_shapes(weights) if weights.endswith((".bin", ".pt")) else _read_safetensors_shapes(weights)
    has_tokenizer = any(os.path.isfile(os.path.join(folder, n)) for n in TOKENIZER_VOCABULARIES)
    return Adapter(folder, chosen, config, weights, tensors, has_tokenizer)


def _read_config(folder: str) -> dict[str, Any]:
    config_path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(config_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as exc:
        raise AdapterError(
            f"{config_path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix or re-save the adapter"
        ) from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise AdapterError(f"{config_path} has no peft_type; it is not a PEFT adapter config, re-save it with PEFT")
    return config


def _weights_file(folder: str, allow_pickle: bool) -> str:
    safetensors_path = os.path.join(folder, SAFETENSORS_FILE)
    if os.path.isfile(safetensors_path):
        return safetensors_path
    for name in PICKLE_FILES:
        pickle_path = os.path.join(folder, name)
        if os.path.isfile(pickle_path):
            if not allow_pickle:
                raise UnsafeFormatError(
                    f"{pickle_path} is a pickle file, which can run code when loaded; convert it to safetensors "
                    "or pass --allow-pickle if you trust it (it is then loaded with weights_only=True)"
                )
            return pickle_path
    raise AdapterError(f"{folder} has {CONFIG_FILE} but no {SAFETENSORS_FILE}; copy the adapter weights next to it")


def _read_safetensors_shapes(path: str) -> dict[str, AdapterTensor]:
    tensors, _, _ = read_header(path, os.path.getsize(path))
    return {strip_prefix(name): AdapterTensor(t.dtype, t.shape) for name, t in tensors.items()}


def _read_pickle_shapes(path: str) -> dict[str, AdapterTensor]:
    state = load_pickle_state(path)
    return {strip_prefix(k): AdapterTensor(DTYPE_NAMES[v.dtype], tuple(v.shape)) for k, v in state.items()}


def strip_prefix(name: str) -> str:
    """The tensor name without PEFT's `base_model.model.` prefix."""
    return name[len(KEY_PREFIX) :] if name.startswith(KEY_PREFIX) else name


class AdapterWeights:
    """Reads adapter tensors on demand by their prefix-free key (safetensors: one tensor at a time)."""

    def __init__(self, adapter: Adapter) -> None:
        from packager.io.reader import SafetensorsShard

        self._state = load_pickle_state(adapter.weights_file) if adapter.is_pickle else None
        self._shard = None if adapter.is_pickle else SafetensorsShard(adapter.weights_file)
        names = self._state.keys() if self._state is not None else self._shard.tensors.keys()
        self._names = {strip_prefix(n): n for n in names}

    def get(self, key: str) -> torch.Tensor:
        """The tensor for prefix-free `key`; pickle tensors are cloned, because the merge modifies them in place."""
        name = self._names[key]
        if self._state is not None:
            return self._state[name].clone()  # the merge works in place; keep the loaded state intact
        return self._shard.read(name)
