"""Load what runtime.json describes: the merged model (baked) or the verified base with its adapters (shared), in
the class its task names: text generation, an encoder (embeddings, labels) or a vision-language model."""

from __future__ import annotations

from .checkpoints import Mount, adapter_tokenizers, load_onnx, load_transformers, with_adapters
from .config import RuntimeConfig
from .encoders import ENCODER_TASKS, Encoder, read_pooling
from .models import Engine
from .startup import check_mounted_base, check_signature


def load_engine(config: RuntimeConfig) -> Engine | Encoder:
    """Verify the base (shared layout) and load the model(s), batched within runtime.json's limits; raises
    BaseMismatch before loading anything."""
    engine = _load(config)
    if config.batching is not None:
        engine.configure(config.batching)
    return engine


def _load(config: RuntimeConfig) -> Engine | Encoder:
    check_signature(config)
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


def load_baked(
    model_dir: str,
    served_name: str,
    backend: str = "transformers",
    quantization: str = "none",
    task: str = "CAUSAL_LM",
    model_class: str = "AutoModelForCausalLM",
) -> Engine | Encoder:
    """A merged (maybe quantized or exported) model folder served under one name, in the task's class."""
    from transformers import AutoTokenizer

    # a compressed-tensors checkpoint loads through transformers, which decompresses it
    onnx = backend == "onnx"
    model = load_onnx(model_dir, task) if onnx else load_transformers(model_dir, quantization, model_class)
    tokenizers = {served_name: AutoTokenizer.from_pretrained(model_dir)}
    if task in ENCODER_TASKS:
        return Encoder(model, tokenizers, task, pooling=read_pooling(model_dir))
    return Engine(model, tokenizers)


def load_shared(mount: Mount) -> Engine | Encoder:
    """The base in the task's class with every PEFT adapter loaded by name; an adapter's own tokenizer wins over
    the base's."""
    base = load_transformers(mount.base_dir, mount.quantization, mount.model_class)
    model = with_adapters(base, mount.adapters)
    tokenizers = adapter_tokenizers(mount.base_dir, mount.adapters)
    names = {name: name for name, _ in mount.adapters}
    if mount.task in ENCODER_TASKS:
        return Encoder(model, tokenizers, mount.task, names, read_pooling(mount.base_dir))
    return Engine(model, tokenizers, names)
