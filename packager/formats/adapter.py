"""The one adapter spec every format reader returns (a PEFT-layout view: config, tensor names, shapes and dtypes,
read from headers), and on-demand access to its tensors for the merge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from packager.adapter_kinds import PROMPT_LEARNING_TYPES, UNMERGED_TYPES
from packager.io.pickle_state import load_pickle_state
from packager.model_files import TOKENIZER_FILES

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
    notes: tuple[str, ...] = ()  # what reading it did that the plan should tell (a conversion, say)
    side_files: tuple[str, ...] = ()  # other files of the folder the server needs (an AdapterHub head)

    @property
    def peft_type(self) -> str:
        """The config's peft_type, upper-cased (e.g. LORA)."""
        return str(self.config.get("peft_type", "")).upper()

    @property
    def is_prompt_learning(self) -> bool:
        """Whether the adapter adds virtual tokens or prefixes (prompt, prefix, P-tuning...): served, never merged."""
        return self.peft_type in PROMPT_LEARNING_TYPES

    @property
    def is_unmerged(self) -> bool:
        """Whether the adapter is served unmerged (prompt learning; AdapterHub bottleneck, prefix, heads...)."""
        return self.peft_type in UNMERGED_TYPES

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
