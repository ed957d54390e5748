"""Prompt-learning adapters (prompt, prefix and P-tuning, ...): nothing to merge, so they are checked against the
base from their config and tensor headers, and served unmerged by PEFT in packager's server."""

from __future__ import annotations

from typing import Any

from packager.adapter_kinds import ADAPTERHUB_TYPE
from packager.artefact.spec import ArtefactSpec
from packager.errors import IncompatibleAdapterError
from packager.formats.adapter import Adapter
from packager.tasks import ModelTask

SERVED_TASKS = ("CAUSAL_LM",)  # served through PEFT's generate, which prepends the virtual tokens
# what PEFT generates with from a plain prompt; multitask prompt tuning needs a task id per request, which the
# OpenAI API has no field for, and CPT is a few-shot method (its examples are part of the adapter)
SERVED_TYPES = ("ADAPTION_PROMPT", "PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")
# the adapter config's field, and the base config's names for the same size (by model family)
MATCHED_SIZES = {
    "token_dim": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
}


def check_prompt_learning(adapter: Adapter, base_config: dict[str, Any], task: ModelTask) -> None:
    """Refuse, in one line, a prompt-learning adapter that does not fit the base or the task packager serves it in."""
    if adapter.peft_type not in SERVED_TYPES:
        raise IncompatibleAdapterError(
            f"{adapter.peft_type} adapter {adapter.path} cannot be served from a plain prompt (packager serves "
            f"{', '.join(SERVED_TYPES)} unmerged); train a prompt-tuning or LoRA adapter instead"
        )
    if task.name not in SERVED_TASKS:
        raise IncompatibleAdapterError(
            f"{adapter.peft_type} adapter {adapter.path} is for {task.name}; packager serves prompt-learning "
            f"adapters for {', '.join(SERVED_TASKS)} (text generation) only; train a LoRA for this task instead"
        )
    for field, names in MATCHED_SIZES.items():
        wanted, found = adapter.config.get(field), _base_size(base_config, names)
        if adapter.peft_type == "PREFIX_TUNING" and field != "num_layers":
            found = _prefix_size(base_config, field)
        if isinstance(wanted, int) and found is not None and wanted != found:
            raise IncompatibleAdapterError(
                f"{adapter.peft_type} adapter {adapter.path} was trained with {field}={wanted}, but the base has "
                f"{found}; pass --base with the model it was trained on"
            )
    _check_embedding_width(adapter, base_config)


def _base_size(config: dict[str, Any], names: tuple[str, ...]) -> int | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    return next((text[n] for n in names if isinstance(text.get(n), int)), None)


def _prefix_size(config: dict[str, Any], field: str) -> int | None:
    """Prefix tuning stores keys and values: PEFT sizes them by the key-value heads (grouped-query attention);
    None where the model's attention is not uniform (per-layer head sizes), which PEFT sizes its own way."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads, hidden = _base_size(text, MATCHED_SIZES["num_attention_heads"]), _base_size(text, MATCHED_SIZES["token_dim"])
    if heads is None or hidden is None or "global_head_dim" in text or "per_layer_config" in text:
        return None
    kv_heads = text.get("num_key_value_heads") if isinstance(text.get("num_key_value_heads"), int) else heads
    head_dim = text.get("head_dim") if isinstance(text.get("head_dim"), int) else hidden // heads
    return head_dim * kv_heads if field == "token_dim" else kv_heads


def _check_embedding_width(adapter: Adapter, base_config: dict[str, Any]) -> None:
    """Prompt, prefix and P-tuning save their virtual tokens as `prompt_embeddings` (prompt and P-tuning: as wide
    as the base's hidden size); PEFT would fail to load the adapter at the container's start without them."""
    embeddings = adapter.tensors.get("prompt_embeddings")
    if embeddings is None and adapter.peft_type != "ADAPTION_PROMPT":
        raise IncompatibleAdapterError(
            f"{adapter.peft_type} adapter {adapter.path} holds no prompt_embeddings tensor (its weights: "
            f"{', '.join(sorted(adapter.tensors)[:3]) or 'none'}); re-save the trained adapter with PEFT"
        )
    hidden = _base_size(base_config, MATCHED_SIZES["token_dim"])
    if adapter.peft_type not in ("PROMPT_TUNING", "P_TUNING") or embeddings is None or hidden is None:
        return
    if embeddings.shape[-1] != hidden:
        raise IncompatibleAdapterError(
            f"{adapter.peft_type} adapter {adapter.path} holds virtual tokens of width {embeddings.shape[-1]}, but "
            f"the base's hidden size is {hidden}; pass --base with the model it was trained on"
        )


def check_unmerged_artefact(spec: ArtefactSpec, adapters: list[Adapter]) -> None:
    """A prompt-learning adapter is served unmerged: there is no merged model to quantize or export (and a quantized
    base is served by vLLM, which does not load such adapters)."""
    unmerged = [adapter for adapter in adapters if adapter.is_unmerged]
    if unmerged and (spec.streamed or spec.transforms):
        flag = "--export onnx" if spec.export == "onnx" else f"--quantize {spec.quantize}"
        raise IncompatibleAdapterError(
            f"{_named(unmerged[0])} is served unmerged ({_why_unmerged(unmerged[0])}; there is no merged model), and "
            f"{flag} needs a merged model; drop {flag}"
        )


def refuse_merge(adapter: Adapter) -> IncompatibleAdapterError:
    """The one-line refusal to merge (or quantize a merge of) an adapter served unmerged by nature."""
    return IncompatibleAdapterError(
        f"{_named(adapter)} {_why_unmerged(adapter)}, so there is nothing to merge; serve it unmerged with "
        "`packager package --adapter ...` (--layout baked or shared)"
    )


def _named(adapter: Adapter) -> str:
    return f"{adapter.config.get('adapterhub', {}).get('method') or adapter.peft_type} adapter {adapter.path}"


def _why_unmerged(adapter: Adapter) -> str:
    if adapter.peft_type == ADAPTERHUB_TYPE:
        return "changes the forward pass instead of the weights"
    return "adds virtual tokens instead of changing weights"
