"""What `from_pretrained` would report for a model folder (missing, unexpected and mis-shaped weights), found
without reading a weight: the class is built on the meta device from its config, the names and shapes come from
the safetensors headers, and transformers' own key handling (legacy renames, a class's checkpoint-key mapping,
the base-model prefix added or stripped, tied and ignored keys) matches the two.

`from_pretrained(path, device_map="meta", output_loading_info=True)` gives the same report but reads every
weight on the way (transformers 4.57 loads each shard before it puts it on the meta device): 3 GB of resident
memory for a 2.2 GB model. tests/architecture/test_load_report.py holds the two reports equal on every tested family.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from packager.formats.folders import safetensors_files
from packager.io.safetensors_format import read_header
from packager.tasks import ModelTask


@dataclass(frozen=True)
class LoadReport:
    """The weights a class needs that the files lack, the stored ones it does not use, and the mis-shaped ones
    (the class's name, the stored shape, the class's shape)."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def clean(self) -> bool:
        """True when every weight the class needs is stored, with its shape, and nothing else is."""
        return not (self.missing or self.unexpected or self.mismatched)


def meta_model(path: str, task: ModelTask, config: Any = None) -> tuple[Any, Any]:
    """The config at `path` and the task's class built from it on the meta device (no weight allocated)."""
    from transformers import AutoConfig

    config = config if config is not None else AutoConfig.from_pretrained(path)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return config, task.model_class().from_config(config)


def stored_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in the folder's safetensors weight files, from their headers."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in safetensors_files(path):
        file = os.path.join(path, name)
        tensors, _metadata, _length = read_header(file, os.path.getsize(file))
        shapes.update((t.name, t.shape) for t in tensors.values())
    return shapes


def load_report(model: Any, shapes: dict[str, tuple[int, ...]], quantizer: Any = None) -> LoadReport:
    """What loading tensors of these names and shapes into `model` (built on meta) would report, computed by
    transformers' own key functions, so its renames and prefix rules apply exactly as on load (`quantizer`: the
    checkpoint's hf_quantizer, for a quantized folder)."""
    from transformers import modeling_utils

    keys = list(shapes)
    renamed, base_from_task, task_from_base = _renaming(model, keys)
    missing, unexpected = modeling_utils._find_missing_and_unexpected_keys(
        model, keys, list(renamed.values()), base_from_task, quantizer
    )
    missing, unexpected = model._adjust_missing_and_unexpected_keys(missing, unexpected, task_from_base)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    mismatched = tuple(
        (new, shapes[old], expected[new])
        for old, new in renamed.items()
        if new in expected and tuple(shapes[old]) != expected[new]
    )
    return LoadReport(tuple(missing), tuple(unexpected), mismatched)


def stored_names(model: Any, stored: list[str]) -> dict[str, str]:
    """The class's parameter name -> the stored name it loads from, by transformers' own renames and prefix
    rules (as in `load_report`); a tied parameter the files do not hold maps to the one it is tied to."""
    names = {new: old for old, new in _renaming(model, stored)[0].items()}
    for group in _tied_groups(model):
        held = next((names[n] for n in group if n in names), None)
        names.update({n: held for n in group if n not in names and held is not None})
    return names


def _renaming(model: Any, keys: list[str]) -> tuple[dict[str, str], bool, bool]:
    """Stored key -> the class's key, as `_load_pretrained_model` decides it: a base-model prefix stripped (a task
    checkpoint loaded as its base) or added (a base loaded as a task class), then the class's own renames."""
    prefix = model.base_model_prefix
    has_prefix = bool(prefix) and any(k.startswith(prefix) for k in keys)
    expects_prefix = bool(prefix) and hasattr(model, prefix)
    task_from_base, base_from_task = not has_prefix and expects_prefix, has_prefix and not expects_prefix
    renamed = model._get_key_renaming_mapping(keys, _key_mapping(model), base_from_task, task_from_base)
    return renamed, base_from_task, task_from_base


def _tied_groups(model: Any) -> list[list[str]]:
    from accelerate.utils import find_tied_parameters

    return find_tied_parameters(model)


def _key_mapping(model: Any) -> dict[str, str] | None:
    """The checkpoint-key renames `from_pretrained` applies: a vision-language class's own mapping, else none."""
    from transformers.modeling_utils import VLMS

    classes = type(model).__mro__[:-1]
    if any(name in cls.__name__.lower() for cls in classes for name in VLMS):
        return getattr(model, "_checkpoint_conversion_mapping", None)
    return None


def folder_report(path: str, task: ModelTask) -> LoadReport:
    """The load report of the model folder at `path` in the task's class, reading configs and headers only; a
    quantized checkpoint's class is first given its compressed layout by transformers' own quantizer."""
    config, model = meta_model(path, task)
    return load_report(model, stored_shapes(path), quantized_layout(model, config))


def quantized_layout(model: Any, config: Any) -> Any:
    """For a checkpoint with a quantization_config: prepare the meta model as transformers does before loading
    it (compressed-tensors: weight -> weight + weight_scale, weight_packed, ...) and return the quantizer."""
    if getattr(config, "quantization_config", None) is None:
        return None
    from transformers.quantizers import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(config.quantization_config)
    with contextlib.redirect_stderr(io.StringIO()):  # the library's progress bar, for a step of milliseconds
        quantizer.preprocess_model(model=model, config=config)
    return quantizer
