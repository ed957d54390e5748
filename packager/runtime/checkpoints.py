"""Read a model folder into a torch or onnxruntime model: the transformers Auto class the task names, on the GPU
when one is visible, quantized at load when runtime.json asks, with PEFT adapters loaded by name."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# an ONNX export's onnxruntime class, by task (optimum-onnx; causal LMs: ORTModelForCausalLM)
ORT_CLASSES = {
    "FEATURE_EXTRACTION": "ORTModelForFeatureExtraction",
    "SEQ_CLS": "ORTModelForSequenceClassification",
    "TOKEN_CLS": "ORTModelForTokenClassification",
}


class HardwareMissing(Exception):
    """The configuration needs what this container lacks: a CUDA GPU, or bitsandbytes, for load-time quantization."""


def load_onnx(model_dir: str, task: str = "CAUSAL_LM") -> Any:
    """An ONNX model folder in the task's onnxruntime class, on CUDA when the image has onnxruntime-gpu and a GPU is
    visible, else on the CPU."""
    import onnxruntime
    import optimum.onnxruntime as ort

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    return getattr(ort, ORT_CLASSES.get(task, "ORTModelForCausalLM")).from_pretrained(model_dir, provider=provider)


def load_transformers(model_dir: str, quantization: str, model_class: str = "AutoModelForCausalLM") -> Any:
    """The model folder in a transformers Auto class, on the GPU when one is visible, quantized at load if asked."""
    import transformers

    auto = getattr(transformers, model_class)
    if quantization == "none":
        return on_gpu_if_visible(auto.from_pretrained(model_dir, dtype="auto"))
    return auto.from_pretrained(
        model_dir, dtype="auto", device_map="auto", quantization_config=load_time_config(quantization)
    )


def on_gpu_if_visible(model: Any) -> Any:
    """The model on the first CUDA GPU when the container sees one (docker run --gpus all), else as loaded."""
    return model.to("cuda") if torch.cuda.is_available() else model


def load_time_config(quantization: str) -> Any:
    """The transformers quantization config for a GPU load-time scheme; refuses without a CUDA GPU."""
    if not torch.cuda.is_available():
        raise HardwareMissing(
            f"load_quantization {quantization} quantizes on a CUDA GPU at load time and this container sees none; "
            "run it with --gpus all on a GPU host, or package without --quantize " + quantization
        )
    from transformers import BitsAndBytesConfig, FineGrainedFP8Config

    if quantization.startswith("bnb-") and importlib.util.find_spec("bitsandbytes") is None:
        raise HardwareMissing(
            f"load_quantization {quantization} needs bitsandbytes, which this image lacks; build the image on a "
            "base image with bitsandbytes (pip install bitsandbytes), or package without --quantize " + quantization
        )
    if quantization == "bnb-nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    if quantization == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return FineGrainedFP8Config()


@dataclass(frozen=True)
class Mount:
    """A base folder and the adapters to load on it by name ((name, folder), ...), in the task's class, quantized
    at load as runtime.json says."""

    base_dir: str
    adapters: Sequence[tuple[str, str]]
    quantization: str = "none"
    task: str = "CAUSAL_LM"
    model_class: str = "AutoModelForCausalLM"


def with_adapters(base: Any, adapters: Sequence[tuple[str, str]]) -> Any:
    """`base` with every PEFT adapter loaded under its name: ((name, folder), ...), at least one."""
    from peft import PeftModel

    (first, first_path), *rest = adapters
    model = PeftModel.from_pretrained(base, first_path, adapter_name=first)
    for name, path in rest:
        model.load_adapter(path, adapter_name=name)
    return model


def adapter_tokenizers(base_dir: str, adapters: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Each served name's tokenizer: the adapter's own where it has one, else the base's."""
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(base_dir)
    has_own = {name: os.path.isfile(os.path.join(path, "tokenizer_config.json")) for name, path in adapters}
    return {name: AutoTokenizer.from_pretrained(path) if has_own[name] else base for name, path in adapters}
