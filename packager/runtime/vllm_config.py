"""runtime.json's `vllm` object: how vLLM is started (dtype, context, LoRA slots, pooling, the plan's sizing), and
its validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config_errors import ConfigError

VLLM_DTYPES = ("auto", "float32", "bfloat16", "float16")
VLLM_KEYS = {
    "dtype",
    "max_model_len",
    "base_name",
    "max_lora_rank",
    "max_loras",
    "device",
    "quantization",
    "pooling",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_num_seqs",
    "gpu_memory_utilization",
    "kv_cache_dtype",
    "enable_expert_parallel",
    "kv_cache_space_gib",
}
# sized at plan time (packager/sizing); left out of runtime.json at these values, vLLM's own defaults
SIZING_DEFAULTS = {
    "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1,
    "max_num_seqs": None,
    "gpu_memory_utilization": None,
    "kv_cache_dtype": None,
    "enable_expert_parallel": False,
    "kv_cache_space_gib": None,
}
# vLLM's pooling runner (embeddings, classifiers): the --pooler-config keys packager sets, and the tasks it serves
POOLING_KEYS = {
    "task": ("embed", "classify"),
    "seq_pooling_type": ("CLS", "LAST", "MEAN"),
    "use_activation": (True, False),
}
VLLM_POOLING_TASKS = {"FEATURE_EXTRACTION": "embed", "SEQ_CLS": "classify"}
VLLM_QUANTIZATIONS = (None, "bitsandbytes", "fp8")
VLLM_KV_CACHE_DTYPES = (None, "fp8", "fp8_e4m3", "fp8_e5m2")
VLLM_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class VllmSettings:
    """How vLLM is started: dtype, context length and, for the shared layout, the LoRA slots."""

    dtype: str = "auto"
    max_model_len: int = 2048
    base_name: str = "base"
    max_lora_rank: int = 16
    max_loras: int = 1
    device: str = "cpu"  # cpu: eager (the CPU image has no C++ compiler for inductor), fitted at start; cuda
    quantization: str | None = None  # vLLM's --quantization for a load-time scheme (GPU): bitsandbytes, fp8
    pooling: dict[str, Any] | None = None  # the pooling runner's --pooler-config (embeddings, classifiers)
    tensor_parallel_size: int = 1  # GPUs of one node the model is split over
    pipeline_parallel_size: int = 1  # nodes (stages) it is split over
    max_num_seqs: int | None = None  # the scheduler's cap on sequences at once (None: vLLM's default)
    gpu_memory_utilization: float | None = None  # the share of each GPU vLLM takes (None: vLLM's default)
    kv_cache_dtype: str | None = None  # --kv-cache-dtype (None: the model's dtype)
    enable_expert_parallel: bool = False  # a mixture-of-experts model's experts spread over the GPUs
    kv_cache_space_gib: int | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE, sized to hold one max_model_len sequence

    def to_json(self) -> dict[str, Any]:
        """The runtime.json `vllm` object (`pooling` only for a pooling model, sizing only where it was sized)."""
        data = dataclasses.asdict(self)
        unset = {k for k, v in SIZING_DEFAULTS.items() if data[k] == v}
        unset |= {"pooling"} if self.pooling is None else set()
        return {k: v for k, v in data.items() if k not in unset}


def check_vllm(vllm: VllmSettings) -> None:
    """Refuse settings vLLM would not start with, in one line."""
    if vllm.dtype not in VLLM_DTYPES:
        raise ConfigError(f"runtime config: vllm.dtype must be one of {', '.join(VLLM_DTYPES)}, got {vllm.dtype!r}")
    if vllm.quantization not in VLLM_QUANTIZATIONS:
        raise ConfigError(
            f"runtime config: vllm.quantization must be bitsandbytes, fp8 or null, got {vllm.quantization!r}"
        )
    if vllm.device not in VLLM_DEVICES:
        raise ConfigError(f"runtime config: vllm.device must be cpu or cuda, got {vllm.device!r}")
    _check_pooling(vllm.pooling)
    for key in ("max_model_len", "max_lora_rank", "max_loras", "tensor_parallel_size", "pipeline_parallel_size"):
        _positive(f"vllm.{key}", getattr(vllm, key))
    for key in ("max_num_seqs", "kv_cache_space_gib"):
        if getattr(vllm, key) is not None:
            _positive(f"vllm.{key}", getattr(vllm, key))
    if vllm.kv_cache_dtype not in VLLM_KV_CACHE_DTYPES:
        raise ConfigError(
            f"runtime config: vllm.kv_cache_dtype must be fp8, fp8_e4m3, fp8_e5m2 or null, got {vllm.kv_cache_dtype!r}"
        )
    if not isinstance(vllm.enable_expert_parallel, bool):
        raise ConfigError("runtime config: vllm.enable_expert_parallel must be true or false")
    share = vllm.gpu_memory_utilization
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1):
        raise ConfigError(f"runtime config: vllm.gpu_memory_utilization must be in (0, 1], got {share!r}")


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"runtime config: {key} must be a positive integer, got {value!r}")


def _check_pooling(pooling: Any) -> None:
    if pooling is None:
        return
    bad = not isinstance(pooling, dict) or any(pooling[k] not in POOLING_KEYS.get(k, ()) for k in pooling)
    if bad or (isinstance(pooling, dict) and "task" not in pooling):
        choices = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in POOLING_KEYS.items())
        raise ConfigError(f"runtime config: vllm.pooling must be an object with a task and keys among {choices}")
