"""Load what runtime.json describes: the merged model (baked) or the verified base with its adapters (shared), in
the class its task names: text generation, an encoder (embeddings, labels) or a vision-language model."""

from __future__ import annotations

from .config import RuntimeConfig
from .encoders import Encoder
from .models import Engine, Mount, load_baked, load_shared
from .startup import check_mounted_base


def load_engine(config: RuntimeConfig) -> Engine | Encoder:
    """Verify the base (shared layout) and load the model(s); raises BaseMismatch before loading anything."""
    task = {"task": config.task, "model_class": config.model_class}
    if config.task == "IMAGE_TEXT_TO_TEXT":
        from .vision import load_vision

        if config.layout == "baked":
            return load_vision(
                config.model_dir or "", [config.served_name or ""], config.load_quantization, config.model_class
            )
        check_mounted_base(config)
        adapters = dict(config.adapters)
        return load_vision(config.base_dir, list(adapters), config.load_quantization, config.model_class, adapters)
    if config.adapter_library == "adapters":
        return _load_adapterhub(config, task)
    if config.layout == "baked":
        model_dir, name = config.model_dir or "", config.served_name or ""
        if config.adapter_dir:  # nothing merged (prompt learning): the base in the image, the adapter on it
            return load_shared(Mount(model_dir, ((name, config.adapter_dir),), config.load_quantization, **task))
        return load_baked(model_dir, name, config.backend, config.load_quantization, **task)
    check_mounted_base(config)
    return load_shared(Mount(config.base_dir, config.adapters, config.load_quantization, **task))


def _load_adapterhub(config: RuntimeConfig, task: dict[str, str]) -> Engine | Encoder:
    """AdapterHub adapters, unmerged: baked, the one adapter (its static head too) on the base in the image; shared,
    every adapter on the verified mounted base (which keeps its own head)."""
    from .adapterhub import load_adapterhub

    if config.layout == "baked":
        adapters = ((config.served_name or "", config.adapter_dir or ""),)
        return load_adapterhub(Mount(config.model_dir or "", adapters, config.load_quantization, **task), True)
    check_mounted_base(config)
    return load_adapterhub(Mount(config.base_dir, config.adapters, config.load_quantization, **task))
