"""Sizing: how many GPUs (or how much CPU memory) a plan's image needs, derived the way vLLM sizes itself at start,
from the config and the safetensors headers only (no weight is read).

shape.py reads the model (attention per layer, widths, experts); weights.py the served bytes; reserve.py what vLLM
keeps besides weights and KV cache; kv.py the cache of one sequence and what the pool buys; gpu.py and cpu.py the
layouts. `plan_sizing` is the one entry the planner calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from packager.errors import UserInputError
from packager.quantize.plan import load_time_weights
from packager.quantize.schemes import SCHEMES
from packager.runtime.batch_limits import BatchLimits
from packager.sizes import KV_CACHE_BYTES, KV_DTYPES, Sizing, Target
from packager.sizing.cpu import size_cpu_server, size_cpu_vllm
from packager.sizing.gpu import size_gpu
from packager.sizing.shape import ModelShape, model_shape, text_config
from packager.sizing.weights import Weights, served_weights

__all__ = ["KV_DTYPES", "plan_sizing", "read_shape", "size_model", "size_served", "sized_plan"]


def sized_plan(
    plan: Any, tensors: Mapping[str, Any], arch: Any, target: Target, config: dict[str, Any], fixed_length: bool
) -> Any:
    """The plan with its pod's size, and vLLM started with the layout, context and KV cache it was sized for
    (`arch`: the base's module kinds, for what a load-time scheme quantizes)."""
    sizing = plan_sizing(plan, tensors, target, config, load_time_weights(arch), fixed_length)
    image = plan.image
    if image is not None and image.engine == "vllm":
        settings = {"max_model_len": sizing.max_model_len, **_vllm_settings(sizing, target)}
        vllm = dataclasses.replace(image.runtime.vllm, **settings)
        image = dataclasses.replace(image, runtime=dataclasses.replace(image.runtime, vllm=vllm))
    elif image is not None:
        batching = server_batching(sizing, target)
        image = dataclasses.replace(image, runtime=dataclasses.replace(image.runtime, batching=batching))
    return dataclasses.replace(plan, sizing=sizing, image=image)


SERVER_BATCH_ROWS = 32  # packager's server: rows per forward pass unless --max-num-seqs says (CPU: latency grows)
SERVER_QUEUE_PER_ROW = 8  # requests waiting per row of a batch before a 429


def server_batching(sizing: Sizing, target: Target) -> BatchLimits:
    """packager's server batches what its KV allowance holds: the prompt and completion tokens of all rows of a
    pass within the sizing's KV bytes (an encoder, which keeps no cache, within the default padded tokens)."""
    rows = target.max_num_seqs or SERVER_BATCH_ROWS
    tokens = BatchLimits.max_batch_tokens
    if sizing.kv_bytes_per_token and sizing.kv_bytes:
        tokens = max(1, sizing.kv_bytes // sizing.kv_bytes_per_token)
    return BatchLimits(rows, int(tokens), rows * SERVER_QUEUE_PER_ROW)


def _vllm_settings(sizing: Sizing, target: Target) -> dict[str, Any]:
    """The VllmSettings fields the sizing decides (each at vLLM's default where the plan did not choose)."""
    chosen: dict[str, Any] = {
        "max_num_seqs": target.max_num_seqs,
        "kv_cache_dtype": None if target.kv_cache_dtype == "auto" else target.kv_cache_dtype,
    }
    if sizing.device != "cuda":
        return {**chosen, "kv_cache_space_gib": sizing.kv_cache_space_gib}
    return {
        **chosen,
        "tensor_parallel_size": sizing.tensor_parallel,
        "pipeline_parallel_size": sizing.nodes,
        "gpu_memory_utilization": target.gpu_memory_utilization,
        "enable_expert_parallel": sizing.expert_parallel,
    }


def read_shape(path: str, config: dict[str, Any]) -> ModelShape:
    """The model's shape; where config.json sets a sliding window but not which layers use it, transformers'
    config class says (its default `layer_types`), as vLLM reads it."""
    text = text_config(config)
    if text.get("layer_types") or not text.get("sliding_window") or text.get("use_sliding_window") is False:
        return model_shape(config)
    return model_shape(config, _resolved_layer_types(path))


def _resolved_layer_types(path: str) -> list[str] | None:
    try:
        from transformers import AutoConfig

        resolved = AutoConfig.from_pretrained(path).get_text_config()
    except (ValueError, KeyError, OSError):
        return None  # a config transformers does not know: every layer slides, as vLLM reads it then
    types = getattr(resolved, "layer_types", None)
    return list(types) if types else None  # no per-layer list: the window applies to every layer


def plan_sizing(
    plan: Any,
    tensors: Mapping[str, Any],
    target: Target,
    config: dict[str, Any],
    linear_weights: frozenset[str] = frozenset(),
    fixed_length: bool = False,
) -> Sizing:
    """The plan's pod size: its weights as served (the merge's tensors, else the base's; file sizes for a pickled
    base), the KV cache at the context the runtime starts with, on `target`. `linear_weights`: the Linear weights a
    load-time scheme quantizes; `fixed_length`: the user chose --max-model-len (never lowered then)."""
    shape = read_shape(plan.base.path, config)
    weights = _weights(plan, tensors, shape, config, linear_weights)
    model_bytes = 4 if _dtype(plan) in ("float32", "F32") else 2
    if plan.image.engine != "vllm":
        kv_bytes = KV_CACHE_BYTES.get(target.kv_cache_dtype) or model_bytes
        return _server(shape, weights, target, shape.context or 2048, kv_bytes)
    vllm = plan.image.runtime.vllm
    lora = (vllm.max_loras, vllm.max_lora_rank) if plan.image.layout == "shared" else (0, 0)
    return size_served(shape, weights, target, vllm.max_model_len, model_bytes, fixed_length, lora)


def size_served(
    shape: ModelShape, weights: Weights, target: Target, length: int, model_bytes: int = 2, fixed: bool = True,
    lora: tuple[int, int] = (0, 0),
) -> Sizing:  # fmt: skip
    """vLLM serving this model at `length` tokens on `target` (`model_bytes`: the served dtype's width; `lora`:
    its LoRA slots and rank, a shared image)."""
    kv_bytes = KV_CACHE_BYTES.get(target.kv_cache_dtype) or model_bytes
    if target.device == "cuda":
        return size_gpu(shape, weights, target, length, kv_bytes, lora)
    return size_cpu_vllm(shape, weights.total, target, length, kv_bytes, model_bytes == 2, fixed)


def size_model(
    config: dict[str, Any], tensors: Mapping[str, Any], target: Target, length: int | None = None,
    quantized: Mapping[str, float] | None = None, path: str | None = None,
) -> Sizing:  # fmt: skip
    """vLLM serving the model `config` and `tensors` (a header table) describe, at `length` tokens (default the
    model's context); `quantized`: tensor name -> bytes per element where it is quantized to serve."""
    shape = read_shape(path, config) if path else model_shape(config)
    weights = served_weights(tensors, shape, quantized or {}, config)
    model_bytes = 4 if str(text_config(config).get("torch_dtype") or config.get("torch_dtype")) == "float32" else 2
    return size_served(shape, weights, target, length or shape.context or 2048, model_bytes)


def _server(shape: ModelShape, weights: Weights, target: Target, length: int, kv_bytes: int) -> Sizing:
    """packager's own server: one process, one GPU (or the CPU)."""
    if target.device != "cuda":
        return size_cpu_server(shape, weights.total, target, length)
    single = dataclasses.replace(target, gpus_per_node=1, max_num_seqs=1, kv_tokens=None, concurrency=None)
    try:
        sizing = size_gpu(shape, weights, single, length, kv_bytes)
    except UserInputError:
        sizing = None
    if sizing is None or sizing.nodes > 1:
        raise UserInputError(
            f"the model does not fit one {target.gpu_memory_gib:g} GiB GPU at {length:,} tokens, and packager's "
            "server runs on one; serve it with vLLM (--runtime vllm), or pass --quantize or a larger --gpu-memory"
        )
    return sizing


def _weights(
    plan: Any, tensors: Mapping[str, Any], shape: ModelShape, config: dict[str, Any], linear: frozenset[str]
) -> Weights:
    table = {t.name: t for t in plan.merge.tensors} if plan.merge is not None else tensors
    if not table:  # a pickled base: its files' sizes, all on the first stage
        return Weights((0,) * len(shape.layers), sum(f.size for f in plan.base.files), 0)
    return served_weights(table, shape, _quantized(plan, linear), config)


def _quantized(plan: Any, linear: frozenset[str]) -> dict[str, float]:
    """Tensor name -> bytes per element, for the weights packager (streamed) or the engine (load time) quantizes."""
    if plan.quantize is not None:
        return dict.fromkeys(plan.quantize.targets, SCHEMES[plan.quantize.scheme].weight_bytes)
    scheme = plan.artefact.scheme
    return dict.fromkeys(linear, scheme.weight_bytes) if scheme is not None and scheme.kind == "load-time" else {}


def _dtype(plan: Any) -> str:
    merged = plan.merge.dtype if plan.merge is not None else "auto"
    return str(merged if merged != "auto" else plan.base.fingerprint.dtype)
