"""PEFT adapter folders (`save_pretrained`, or a trainer's newest `checkpoint-N/`): config and tensor headers read,
no weight loaded (a pickle only with --allow-pickle, then with weights_only=True)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

from packager.errors import AdapterError, UnsafeFormatError
from packager.formats.adapter import Adapter, AdapterTensor, strip_prefix
from packager.formats.folders import CONFIG_FILE, find_adapter
from packager.io.hashing import cache_root, sha256_file
from packager.io.pickle_state import load_pickle_state
from packager.io.safetensors_format import DTYPE_NAMES, read_header
from packager.model_files import TOKENIZER_FILES, TOKENIZER_VOCABULARIES

SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt")


def read(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter:
    """The PEFT adapter at `path` (or its newest or chosen checkpoint-N); reads headers only (pickle weights only
    with `allow_pickle`)."""
    folder, chosen = find_adapter(path, checkpoint)
    config = _read_config(folder)
    weights = _weights_file(folder, allow_pickle)
    tensors = read_pickle_shapes(weights) if weights.endswith((".bin", ".pt")) else read_safetensors_shapes(weights)
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


def read_safetensors_shapes(path: str) -> dict[str, AdapterTensor]:
    """Each tensor's dtype and shape from a safetensors header (no weight is read), keys without PEFT's prefix."""
    tensors, _, _ = read_header(path, os.path.getsize(path))
    return {strip_prefix(name): AdapterTensor(t.dtype, t.shape) for name, t in tensors.items()}


def read_pickle_shapes(path: str) -> dict[str, AdapterTensor]:
    """Each tensor's dtype and shape from a pickled state dict (loaded with weights_only=True)."""
    state = load_pickle_state(path)
    return {strip_prefix(k): AdapterTensor(DTYPE_NAMES[v.dtype], tuple(v.shape)) for k, v in state.items()}


def write_folder(target: str, config: dict[str, Any], tensors: dict[str, Any], beside: str | None = None) -> None:
    """Write a PEFT adapter folder (config, safetensors, and the tokenizer files found in `beside`) atomically: a
    temp folder renamed into place, so a half-written one is never read, and a concurrent writer's copy wins."""
    from safetensors.torch import save_file

    staging = f"{target}.tmp-{os.getpid()}"
    os.makedirs(staging, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(staging, SAFETENSORS_FILE))
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for name in TOKENIZER_FILES if beside else ():
        if os.path.isfile(os.path.join(beside, name)):
            shutil.copy2(os.path.join(beside, name), staging)
    if os.path.isdir(target):
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)


def converted_folder(kind: str, sources: list[str]) -> str:
    """Where the PEFT adapter converted from `sources` (another format's files) lives in packager's cache: named by
    their contents, so it is made once and a changed input gets a new one."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(f"{os.path.basename(path)}:{sha256_file(path)};".encode())
    return os.path.join(cache_root(), kind, digest.hexdigest()[:32])
