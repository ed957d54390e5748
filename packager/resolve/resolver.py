"""Resolve an adapter and its base into a checked, frozen PackagePlan (headers and configs only)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from packager.adapter_kinds import ADAPTERHUB_TYPE
from packager.architecture.fingerprint import Fingerprint, fingerprint_from_config
from packager.architecture.inspect import Architecture, inspect_architecture, read_config
from packager.architecture.weights import BaseWeights, index_base_weights
from packager.errors import IncompatibleAdapterError, OutputError
from packager.formats import read_adapter
from packager.formats.adapter import Adapter
from packager.io.hashing import sha256_file
from packager.lock import plan_lock
from packager.model_files import PROCESSOR_FILES, TOKENIZER_FILES, sentence_transformers_files
from packager.plan import AdapterSpec, BaseSpec, FileEntry, PackagePlan
from packager.resolve.adapterhub import check_adapterhub
from packager.resolve.base import SIDE_FILES, BaseLocation, locate_base
from packager.resolve.merge_plan import plan_merge
from packager.resolve.prompt_learning import check_prompt_learning, refuse_merge
from packager.resolve.qlora import apply_qlora, choose_base, qlora_spec
from packager.tasks import ModelTask, choose_task

ADAPTER_SETTINGS = (
    "r",
    "lora_alpha",
    "use_rslora",
    "use_dora",
    "fan_in_fan_out",
    "target_modules",
    "modules_to_save",
    "layers_to_transform",
    "rank_pattern",
    "alpha_pattern",
    "bias",
    "lora_bias",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "num_virtual_tokens",
    "prefix_projection",
    "encoder_reparameterization_type",
    "adapterhub",
)


@dataclass(frozen=True)
class ResolveRequest:
    """What the user asked for; every field maps to a CLI flag."""

    adapter: str
    base: str | None = None
    revision: str | None = None
    checkpoint: int | None = None
    dtype: str = "auto"
    allow_pickle: bool = False
    hash_base: bool = True
    engine: str = "auto"
    qlora_merge: str | None = None  # "w16" or "simulate-nf4"; None: w16 for QLoRA adapters
    qlora: bool = False  # the user says the adapter was trained with QLoRA
    task: str | None = None  # --task: the model class, when neither the adapter nor the base says it right


@dataclass(frozen=True)
class Resolved:
    """The plan plus what later steps need to read the inputs."""

    plan: PackagePlan
    adapter: Adapter
    architecture: Architecture
    weights: BaseWeights


def resolve(request: ResolveRequest) -> Resolved:
    """Find adapter and base, check they fit, and pin the files (base hashes may be deferred to the merge)."""
    adapter = read_adapter(request.adapter, request.checkpoint, request.allow_pickle)
    notes = adapter.notes
    choice = choose_base(adapter, request.base, request.revision)
    spec, qlora_notes = qlora_spec(adapter, choice.named_config, request.qlora_merge, request.qlora)
    location = choice.location
    weights = index_base_weights(location.path, request.allow_pickle)
    task = choose_task(request.task, adapter.config, read_config(location.path))
    _check_processor(task, location.path)
    arch = inspect_architecture(location.path, weights.tensors if weights.format == "safetensors" else None, task)
    if adapter.is_unmerged:  # nothing to merge: served unmerged, by PEFT or the `adapters` library
        check = check_adapterhub if adapter.peft_type == ADAPTERHUB_TYPE else check_prompt_learning
        check(adapter, read_config(location.path), task)
        merge = None
    else:
        merge = plan_merge(adapter, arch, weights, request.dtype, request.engine)
        merge = apply_qlora(merge, spec, arch, choice.notes + qlora_notes)
        merge = dataclasses.replace(merge, notes=notes + merge.notes) if notes else merge
    plan = PackagePlan(
        adapter=_adapter_spec(adapter),
        base=_base_spec(location, arch.fingerprint, weights, request.hash_base),
        merge=merge,
        task=task,
    )
    return Resolved(plan, adapter, arch, weights)


def require_merge(resolved: Resolved) -> Resolved:
    """`resolved`, refused in one line when there is nothing to merge (a prompt-learning adapter)."""
    if resolved.plan.merge is None:
        raise refuse_merge(resolved.adapter)
    return resolved


def _check_processor(task: ModelTask, path: str) -> None:
    """A vision-language merge is checked on an image, which needs the base's image processor."""
    if task.name == "IMAGE_TEXT_TO_TEXT" and not os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        raise IncompatibleAdapterError(
            f"the vision-language base at {path} has no preprocessor_config.json, so its images cannot be "
            "processed; pass the full base folder (with its processor files)"
        )


def _adapter_spec(adapter: Adapter) -> AdapterSpec:
    names = ["adapter_config.json", os.path.basename(adapter.weights_file), *adapter.side_files]
    names += adapter.tokenizer_files
    files = tuple(_entry(adapter.path, n, True) for n in dict.fromkeys(names) if n)
    settings = {k: adapter.config[k] for k in ADAPTER_SETTINGS if k in adapter.config}
    return AdapterSpec(adapter.path, adapter.checkpoint, adapter.peft_type, settings, files)


def resolve_base(hint: str, revision: str | None = None, allow_pickle: bool = False) -> BaseSpec:
    """A base model alone (a folder, or a hub id in the Hugging Face cache), every file pinned by sha256; torch-free
    (the fingerprint comes from config.json)."""
    location = locate_base(hint, revision, explicit=True)
    weights = index_base_weights(location.path, allow_pickle)
    return _base_spec(location, fingerprint_from_config(read_config(location.path)), weights, True)


def _base_spec(location: BaseLocation, fingerprint: Fingerprint, weights: BaseWeights, hashed: bool) -> BaseSpec:
    extra = (*PROCESSOR_FILES, *_index_files(location.path), *sentence_transformers_files(location.path))
    names = (*SIDE_FILES, *TOKENIZER_FILES, *extra)  # the tokenizer and processor ship too: pin them
    side = [n for n in names if os.path.isfile(os.path.join(location.path, n))]
    entries = [_entry(location.path, n, True) for n in side]
    entries += [_entry(location.path, n, hashed) for n in weights.files]
    return BaseSpec(
        location.path,
        location.source,
        location.repo_id,
        location.revision,
        location.commit,
        fingerprint,
        weights.format,
        tuple(entries),
    )


def _index_files(path: str) -> list[str]:
    return [
        n
        for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
        if os.path.isfile(os.path.join(path, n))
    ]


def _entry(folder: str, name: str, hashed: bool) -> FileEntry:
    path = os.path.join(folder, name)
    return FileEntry(name, os.path.getsize(path), sha256_file(path) if hashed else None)


def write_lock(plan: PackagePlan, path: str) -> None:
    """Write the lock atomically (temp file + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(
            f"cannot write the lock to {path}: folder {directory} does not exist; create it or pass --lock"
        )
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(plan_lock(plan), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
