"""A model folder's weights as its files describe them: which files, and every tensor's name, dtype, shape and
place (safetensors headers only; a pickle is loaded only when allowed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from packager.errors import BaseNotFoundError, UnsafeFormatError
from packager.formats.folders import pickle_files, safetensors_files
from packager.io.pickle_state import load_pickle_state
from packager.io.safetensors_format import DTYPE_NAMES, TensorInfo, read_header


@dataclass(frozen=True)
class BaseWeights:
    """The base's weight files and, for safetensors, every tensor's location (headers only)."""

    files: tuple[str, ...]
    format: str  # "safetensors" or "pickle"
    tensors: dict[str, TensorInfo] = field(repr=False)
    tensor_file: dict[str, str] = field(repr=False)


def index_base_weights(path: str, allow_pickle: bool) -> BaseWeights:
    """List the weight files of a base folder and read their safetensors headers."""
    files = safetensors_files(path)
    if files:
        tensors: dict[str, TensorInfo] = {}
        tensor_file: dict[str, str] = {}
        for name in files:
            full = os.path.join(path, name)
            infos, _, _ = read_header(full, os.path.getsize(full))
            tensors.update(infos)
            tensor_file.update({t: name for t in infos})
        return BaseWeights(tuple(files), "safetensors", tensors, tensor_file)
    pickles = pickle_files(path)
    if not pickles:
        raise BaseNotFoundError(
            f"{path} holds no model weights (*.safetensors or pytorch_model*.bin); pass the right --base"
        )
    if not allow_pickle:
        raise UnsafeFormatError(
            f"base {path} has only pickle weights ({pickles[0]}), which can run code when loaded; convert them "
            "to safetensors or pass --allow-pickle if you trust them (loaded with weights_only=True)"
        )
    tensors, tensor_file = {}, {}
    for name in pickles:
        for key, value in load_pickle_state(os.path.join(path, name)).items():
            nbytes = value.numel() * value.element_size()
            tensors[key] = TensorInfo(key, DTYPE_NAMES[value.dtype], tuple(value.shape), 0, nbytes)
            tensor_file[key] = name
    return BaseWeights(tuple(pickles), "pickle", tensors, tensor_file)
