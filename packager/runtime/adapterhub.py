"""AdapterHub adapters served unmerged by the `adapters` library (only in images that carry it): the base in its
task's class with the library's adapter support (or the library's AutoAdapterModel when the adapters bring
prediction heads), each adapter loaded under its served name and activated per request.

The library's attention replacement for some families (Llama, in adapters 1.3.0 on transformers 4.57) takes the
KV cache under a keyword the model no longer passes, so cached decoding diverges from the model's own forward
pass. Each engine measures that at start and, where the two differ, generates without the cache: exact, slower.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from .checkpoints import Mount, adapter_tokenizers, load_transformers, on_gpu_if_visible
from .encoders import ENCODER_TASKS, Encoder, read_pooling
from .models import Engine

HEAD_CONFIG = "head_config.json"
log = logging.getLogger("packager_runtime")


def load_adapterhub(mount: Mount, static_heads: bool = False) -> Engine | Encoder:
    """The base with every AdapterHub adapter loaded by name; `static_heads`: load a static head the adapter saved
    (baked: the one adapter's), else keep the base's."""
    base_dir, adapters, task = mount.base_dir, mount.adapters, mount.task
    heads = {name: head for name, path in adapters if (head := flex_head(path)) is not None}
    model = _model(base_dir, mount.quantization, mount.model_class, with_heads=bool(heads))
    dtype = model.dtype
    for name, path in adapters:
        model.load_adapter(
            path, load_as=name, set_active=False, use_safetensors=True, with_head=static_heads or name in heads
        )
    if mount.quantization == "none":  # the library loads adapters in float32: a 16-bit base would refuse them
        model.to(dtype)
    tokenizers = adapter_tokenizers(base_dir, adapters)
    names = {name: name for name, _ in adapters}
    if task in ENCODER_TASKS:
        labels = {name: _labels(head) for name, head in heads.items() if head.get("label2id")}
        return Encoder(model, tokenizers, task, names, read_pooling(base_dir), model.set_active_adapters, labels)
    exact = all(cache_is_exact(model, name) for name in names)
    if not exact:
        log.warning("the adapters library's KV cache differs from the full forward pass here; generating without it")
    return Engine(model, tokenizers, names, model.set_active_adapters, use_cache=exact)


def flex_head(folder: str) -> dict[str, Any] | None:
    """The adapter's prediction head config (AutoAdapterModel), or None (none, or a static head)."""
    try:
        with open(os.path.join(folder, HEAD_CONFIG)) as f:
            head = json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return head if isinstance(head, dict) else None


def cache_is_exact(model: Any, name: str) -> bool:
    """Whether, with adapter `name` active, the last token's logits from a KV-cached step equal those of the full
    forward pass (to float noise) on a short prompt."""
    model.set_active_adapters(name)
    vocab = int(model.config.vocab_size)
    ids = (torch.arange(1, 9, device=model.device) * 7919 % max(vocab - 1, 1) + 1).unsqueeze(0)
    with torch.no_grad():
        full = model(ids).logits[0, -1].float()
        past = model(ids[:, :-1], use_cache=True).past_key_values
        step = model(ids[:, -1:], past_key_values=past, use_cache=True).logits[0, -1].float()
    return bool(torch.allclose(full, step, rtol=1e-3, atol=1e-3 * float(full.abs().max()) + 1e-5))


def _model(base_dir: str, quantization: str, model_class: str, with_heads: bool) -> Any:
    import adapters

    if with_heads:  # prediction heads live on the library's own model class
        return on_gpu_if_visible(adapters.AutoAdapterModel.from_pretrained(base_dir, dtype="auto")).eval()
    model = load_transformers(base_dir, quantization, model_class)
    adapters.init(model)
    return model.eval()


def _labels(head: dict[str, Any]) -> dict[int, str]:
    return {int(index): str(label) for label, index in head["label2id"].items()}
