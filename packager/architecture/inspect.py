"""What the base model is made of, read from its config by building it on the meta device and from its
safetensors headers (no weight is read)."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from packager.architecture.fingerprint import Fingerprint, fingerprint_from_config, fingerprint_of_model_config
from packager.architecture.known import INPUT_EMBEDDING, OUTPUT_EMBEDDING, known_module_kinds
from packager.architecture.load_report import LoadReport, load_report, meta_model, stored_shapes
from packager.errors import BaseNotFoundError, CorruptFileError, IncompatibleAdapterError
from packager.tasks import ModelTask


@dataclass(frozen=True)
class Architecture:
    """Module kinds by name (linear, conv1d, embedding, other) and the embedding layout."""

    fingerprint: Fingerprint
    module_kinds: dict[str, str] = field(repr=False)
    input_embedding: str | None
    output_embedding: str | None
    model_class: str = ""  # the class the task builds, e.g. BertForSequenceClassification ("" on the fast path)
    missing: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)  # needed, not in the files:
    # a task head, by parameter name with the shape the class builds it in
    num_labels: int | None = None  # the label count the class was built with (classifiers)
    base_prefix: str = ""  # the class's base_model_prefix when its own weights live under it (bert., model.)
    key_mapping: tuple[tuple[str, str], ...] = ()  # the class's checkpoint-key renames (regex, replacement)
    unexpected: frozenset[str] = frozenset()  # base tensors that class does not use (another task's head)

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
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as exc:
        raise CorruptFileError(f"{config_path} is not valid JSON ({exc}); restore the base's config.json") from None
    if not isinstance(config, dict):
        raise CorruptFileError(f"{config_path} is not a JSON object; restore the base's config.json")
    return config


def inspect_architecture(path: str, tensors: dict | None = None, task: ModelTask | None = None) -> Architecture:
    """The base's module kinds and embedding layout for the task's class: from the table of known causal-LM
    families when the stored tensors match it (no transformers import), else by loading the base on the meta
    device in that class, which also tells what the class needs that the files lack, and what it leaves unused."""
    task = task or ModelTask()
    if tensors is not None and task.name == "CAUSAL_LM":
        config = read_config(path)
        kinds = known_module_kinds(config, tensors)
        if kinds is not None:
            return Architecture(fingerprint_from_config(config), kinds, INPUT_EMBEDDING, OUTPUT_EMBEDDING)
    return inspect_meta_architecture(path, task)


def inspect_meta_architecture(path: str, task: ModelTask | None = None) -> Architecture:
    """Load the base on the meta device in the task's class (memoized per config and class)."""
    config_path = os.path.join(path, "config.json")
    stamp = os.stat(config_path).st_mtime_ns if os.path.isfile(config_path) else 0
    return _inspect_architecture(os.path.abspath(path), stamp, task or ModelTask())


@functools.lru_cache(maxsize=8)
def _inspect_architecture(path: str, config_stamp: int, task: ModelTask) -> Architecture:
    from transformers.pytorch_utils import Conv1D

    read_config(path)
    config, model, report = _meta_load(path, task)
    names = {id(module): name for name, module in model.named_modules()}
    kinds = {name: _kind(module, Conv1D) for name, module in model.named_modules() if name}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return Architecture(
        fingerprint=fingerprint_of_model_config(config),
        module_kinds=kinds,
        input_embedding=names.get(id(model.get_input_embeddings())),
        output_embedding=names.get(id(output)) if output is not None else None,
        model_class=type(model).__name__,
        missing=_shapes(model, report.missing),
        unexpected=frozenset(report.unexpected),
        num_labels=getattr(model.config, "num_labels", None) if task.name.endswith("_CLS") else None,
        base_prefix=_nested_prefix(model),
        key_mapping=tuple((getattr(model, "_checkpoint_conversion_mapping", None) or {}).items()),
    )


def _nested_prefix(model: Any) -> str:
    prefix = getattr(model, "base_model_prefix", "") or ""
    return prefix if prefix and any(k.startswith(prefix + ".") for k in model.state_dict()) else ""


def _shapes(model: Any, names) -> dict[str, tuple[int, ...]]:
    state = model.state_dict()
    return {n: tuple(state[n].shape) for n in sorted(names) if n in state}


def _meta_load(path: str, task: ModelTask) -> tuple[Any, Any, LoadReport]:
    """The base in the task's class on the meta device, and what loading its files would report (read from the
    safetensors headers, so no weight is read); a pickled base is not opened before --allow-pickle."""
    try:
        config, model = meta_model(path, task)
        report = load_report(model, stored_shapes(path)) if _has_loadable_weights(path) else LoadReport()
    except (ValueError, KeyError, OSError) as exc:
        raise IncompatibleAdapterError(
            f"transformers cannot build the base at {path} as {task.auto_class} for task {task.name} "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
            "pass the right --base, or --task for another model class"
        ) from None
    if report.mismatched:
        name, stored, built = report.mismatched[0]
        raise CorruptFileError(
            f"the base at {path} stores {name} with shape {list(stored)}, but its config.json builds it as "
            f"{list(built)}; the config and the weights are from different models: restore the base's config.json"
        )
    return config, model, report


def _has_loadable_weights(path: str) -> bool:
    """Safetensors whose headers can be read (a pickled base is not opened before --allow-pickle)."""
    return any(n.endswith(".safetensors") for n in os.listdir(path))


def _kind(module: torch.nn.Module, conv1d: type) -> str:
    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, conv1d):
        return "conv1d"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    return "other"
