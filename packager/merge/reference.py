"""The library path: base + PeftModel as PEFT itself loads them. Used for parity and as a merge engine."""

from __future__ import annotations

import warnings
from collections import Counter

import torch

from packager.dtypes import SAFETENSORS_NAME
from packager.errors import IncompatibleAdapterError
from packager.io.safetensors_format import DTYPES
from packager.merge.qlora import load_4bit_base
from packager.resolve.resolver import Resolved

DTYPE_ALIASES = {name: DTYPES[stored] for name, stored in SAFETENSORS_NAME.items()}


def compute_dtype(resolved: Resolved) -> torch.dtype:
    """The dtype the merge produces: the requested one, or the base's most common float dtype."""
    requested = resolved.plan.merge.dtype
    return DTYPE_ALIASES[requested] if requested in DTYPE_ALIASES else stored_dtype(resolved)


def stored_dtype(resolved: Resolved) -> torch.dtype:
    """The base's most common float dtype."""
    counts = Counter(t.dtype for t in resolved.weights.tensors.values() if DTYPES[t.dtype].is_floating_point)
    return DTYPES[counts.most_common(1)[0][0]] if counts else torch.float32


def simulates_4bit(resolved: Resolved) -> bool:
    """Whether the QLoRA mode is simulate-nf4 (merge onto the base as rounded through nf4)."""
    qlora = resolved.plan.merge.qlora
    return qlora is not None and qlora.mode == "simulate-nf4"


def reference_name(resolved: Resolved) -> str:
    """What the merged model is compared with."""
    if not simulates_4bit(resolved):
        return "PEFT on the base as stored"
    qlora = resolved.plan.merge.qlora
    double = "double quant" if qlora.double_quant else "no double quant"
    return f"PEFT on the base loaded in 4-bit by bitsandbytes ({qlora.quant_type}, {double}, fp32 compute)"


def label_kwargs(resolved: Resolved) -> dict:
    """The label count a classifier is built with, when the adapter's head has its own."""
    updates = resolved.plan.merge.config_updates if resolved.plan.merge else {}
    return {k: updates[k] for k in ("id2label", "label2id") if k in updates}


def load_peft_model(resolved: Resolved, dtype: torch.dtype):
    """Load base then adapter the way PEFT users do, resizing embeddings for an extended vocabulary."""
    from peft import PeftModel

    plan = resolved.plan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if simulates_4bit(resolved):  # what training's forward computed: 4-bit from the stored dtype
            model = load_4bit_base(plan.base.path, stored_dtype(resolved), plan.merge.qlora, plan.task)
        else:
            model = plan.task.model_class().from_pretrained(plan.base.path, dtype=dtype, **label_kwargs(resolved))
        vocab = plan.merge.config_updates.get("vocab_size")
        if vocab:
            model.resize_token_embeddings(vocab)
        try:
            return PeftModel.from_pretrained(model, resolved.adapter.path, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
            raise IncompatibleAdapterError(
                f"PEFT could not load the adapter onto the base: {first}; pass the right --base"
            ) from None
