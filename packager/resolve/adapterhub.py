"""AdapterHub adapters served unmerged (bottleneck, prefix and prompt tuning, unions, prediction heads): checked
against the base and the task from their config and tensor headers before any work, and against each other in a
shared image, so the `adapters` library loads them at the container's start."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from packager.architecture.weights import BaseWeights
from packager.errors import IncompatibleAdapterError
from packager.formats.adapter import Adapter
from packager.formats.adapterhub import HEAD_TASKS
from packager.io.reader import SafetensorsShard
from packager.tasks import ModelTask

# what packager's server answers with an AdapterHub model: text, labels (SEQ_CLS, TOKEN_CLS), embeddings
SERVED_TASKS = ("CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION")
TIED_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def library_settings(adapter: Adapter) -> dict[str, Any]:
    """The library's own facts the reader kept (method, model type, hidden size, head)."""
    return adapter.config.get("adapterhub") or {}


def check_adapterhub(adapter: Adapter, base_config: dict[str, Any], task: ModelTask) -> None:
    """Refuse, in one line, an AdapterHub adapter the base or the task cannot serve."""
    settings = library_settings(adapter)
    method = settings.get("method", "AdapterHub")
    head = settings.get("head_type")
    if head is not None and head not in HEAD_TASKS:
        raise IncompatibleAdapterError(
            f"{method} adapter {adapter.path} has a {head} prediction head; packager's server answers with "
            f"{' and '.join(HEAD_TASKS)} heads; train one of those, or a static head (the transformers model class)"
        )
    if task.name not in SERVED_TASKS:
        raise IncompatibleAdapterError(
            f"{method} adapter {adapter.path} is for {task.name}; packager serves AdapterHub adapters for "
            f"{', '.join(SERVED_TASKS)}; pass --task with one of them, or train a LoRA"
        )
    for key, wanted in (("model_type", settings.get("model_type")), ("hidden_size", settings.get("hidden_size"))):
        found = base_config.get(key)
        if wanted is not None and found is not None and wanted != found:
            raise IncompatibleAdapterError(
                f"{method} adapter {adapter.path} was trained on a model with {key} {wanted}, but the base has "
                f"{found}; pass --base with the model it was trained on"
            )


def check_shared(adapters: list[tuple[str, Adapter]], base_tensor: Callable[[str], torch.Tensor | None]) -> None:
    """A shared image loads every adapter on one model: all with a prediction head or none (the library's head
    model answers only through a head), and no static head that differs from the base's (only one could be the
    model's). `base_tensor(name)`: the base's tensor of that name, or None."""
    hub = [(name, a) for name, a in adapters if a.peft_type == "ADAPTERHUB"]
    flex = [name for name, a in hub if library_settings(a).get("head_type")]
    if flex and len(flex) != len(hub):
        others = [name for name, _ in hub if name not in flex]
        raise IncompatibleAdapterError(
            f"adapters {', '.join(flex)} carry prediction heads and {', '.join(others)} do not; a shared image "
            "serves one kind: package them as separate images"
        )
    for name, adapter in hub:
        changed = _changed_head_tensor(adapter, base_tensor)
        if changed:
            raise IncompatibleAdapterError(
                f"adapter {name} ({adapter.path}) brings its own {changed}, but a shared image keeps the base's; "
                "package it with --layout baked, or train it with a prediction head (AutoAdapterModel)"
            )


def base_tensor_reader(folder: str, weights: BaseWeights) -> Callable[[str], torch.Tensor | None]:
    """Reads one base tensor by name (None when the base lacks it, or is a pickle); an absent `lm_head.weight` is
    the input embeddings it is tied to."""

    def read(name: str) -> torch.Tensor | None:
        """The base's tensor `name`, or None."""
        if weights.format != "safetensors":
            return None
        if name not in weights.tensor_file and name.endswith("lm_head.weight"):
            name = next((n for n in weights.tensor_file if n.endswith(TIED_EMBEDDINGS)), name)
        file = weights.tensor_file.get(name)
        return SafetensorsShard(os.path.join(folder, file)).read(name) if file else None

    return read


def _changed_head_tensor(adapter: Adapter, base_tensor: Any) -> str | None:
    """The first tensor of the adapter's static head that the base lacks or holds different values for."""
    head_file = library_settings(adapter).get("static_head")
    if not head_file:
        return None
    from packager.formats.adapterhub import load_head

    for key, tensor in load_head(f"{adapter.path}/{head_file}").items():
        ours = base_tensor(key)
        if ours is None or ours.shape != tensor.shape or not torch.equal(ours.to(tensor.dtype), tensor):
            return key
    return None
