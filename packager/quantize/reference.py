"""The unquantized model a quantized checkpoint is made from and measured against, as the pipeline
(quantize/pipeline.py) takes it: a model folder here; the merge made again from base and adapter is built by
merge/merged_source.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from packager.accuracy.lazy_model import WeightSource
from packager.architecture.weights import index_base_weights
from packager.model_files import WEIGHT_SUFFIXES, folder_size
from packager.quantize.sources import FolderSource


@dataclass(frozen=True)
class Reference:
    """The unquantized model a checkpoint is made from and measured against: its transformers config, a source of
    its weights for a module-by-module pass, the folder of its tokenizer, each weight's stored dtype, its size."""

    what: str  # how the log names it
    config: Callable[[], Any]
    weights: Callable[[torch.nn.Module], WeightSource]
    tokenizer: str
    dtypes: Callable[[], dict[str, str]]
    size_bytes: int


def folder_reference(folder: str) -> Reference:
    """An unquantized model folder (a merge's output, a base) as the reference."""

    def config() -> Any:
        """The folder's transformers config."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder)

    def dtypes() -> dict[str, str]:
        """Each stored weight's safetensors dtype (headers only)."""
        return {name: info.dtype for name, info in index_base_weights(folder, allow_pickle=False).tensors.items()}

    weights = folder_size(folder, WEIGHT_SUFFIXES)
    return Reference(folder, config, lambda model: FolderSource(folder, model), folder, dtypes, weights)
