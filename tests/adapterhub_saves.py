"""AdapterHub (`adapters` library) saves made by the library itself, and what its own model answers with them: the
oracle for packager's unmerged serving. Every trainable tensor is randomized, as training would move it."""

from __future__ import annotations

import os
import warnings

import adapters
import torch
import transformers

HEAD_LABELS = {0: "neg", 1: "neu", 2: "pos"}
STATIC_HEADS = ("classifier", "score", "lm_head")


def save(
    base: str,
    folder: str,
    config,
    model_class: str = "AutoModelForCausalLM",
    head: str | None = None,
    seed: int = 1,
    safetensors: bool = True,
    train_static_head: bool = False,
) -> str:
    """`config` trained-looking on `base`, saved with `save_adapter`; `head`: a prediction head of that type
    (classification, tagging, ...) on the library's AutoAdapterModel."""
    torch.manual_seed(seed)
    model = _library_model(base, model_class, head is not None)
    model.add_adapter("task", config=config)
    if head == "classification":
        model.add_classification_head("task", num_labels=3, id2label=HEAD_LABELS)
    elif head == "tagging":
        model.add_tagging_head("task", num_labels=3, id2label=HEAD_LABELS)
    elif head is not None:
        getattr(model, f"add_{head}_head")("task", num_labels=2)
    model.train_adapter("task")
    with torch.no_grad():
        for name, param in model.named_parameters():
            static_head = name.startswith(STATIC_HEADS)  # the library trains a static classifier with the adapter
            if (param.requires_grad and not static_head) or (train_static_head and static_head):
                param.add_(torch.randn_like(param) * 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_adapter(folder, "task", use_safetensors=safetensors)
    return folder


def loaded(base: str, folder: str, model_class: str = "AutoModelForCausalLM", with_head: bool = True):
    """The library's model with the saved adapter (and its head) active, as a user of the library loads it."""
    head = os.path.isfile(os.path.join(folder, "head_config.json")) and _is_flex(folder)
    model = _library_model(base, model_class, head)
    name = model.load_adapter(folder, use_safetensors=True, with_head=with_head)
    model.set_active_adapters(name)
    return model.eval()


def greedy(model, ids: list[int], n: int) -> list[int]:
    """The library model's greedy continuation, without the KV cache (which the library's Llama support
    mishandles on transformers 4.57: see packager/runtime/adapterhub.py)."""
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
            use_cache=False, pad_token_id=0,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


def _library_model(base: str, model_class: str, flex: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flex:
            return adapters.AutoAdapterModel.from_pretrained(base, dtype=torch.float32)
        model = getattr(transformers, model_class).from_pretrained(base, dtype=torch.float32)
    adapters.init(model)
    return model


def _is_flex(folder: str) -> bool:
    import json

    with open(os.path.join(folder, "head_config.json")) as f:
        return json.load(f).get("config") is not None


def loaded_base(base: str, model_class: str = "AutoModelForCausalLM"):
    """The base in the library's model, no adapter: what an adapter must change."""
    return _library_model(base, model_class, False).eval()
