"""How big a serving pod must be, computed at plan time from the model and the target, with the arithmetic kept
for --dry-run: the weights' bytes (as served: quantized where the artefact is), the KV cache per token and for
`max_num_seqs` sequences of the full context, and from them the tensor-parallel size (the fewest GPUs of one node
that hold it, dividing the attention heads as vLLM requires) and, past one node, pipeline stages across nodes.
A model that fits no allowed layout is refused in one line with the figures.

Modelled, and stated in the plan: vLLM reserves `gpu_memory_utilization` of each GPU, and of that the weights' share
and the KV cache's share are split evenly over the GPUs; activations, CUDA graphs and the CUDA context take a fixed
ACTIVATION_BYTES per GPU; host memory is RUNTIME_BYTES per process (the API server, one worker per GPU) plus
/dev/shm. On CPU the KV cache is VLLM_CPU_KVCACHE_SPACE (the image's default, 1 GiB)."""

from __future__ import annotations

import math
from typing import Any

from packager.errors import UserInputError
from packager.io.safetensors_format import element_size
from packager.sizes import GIB, Sizing, Target
from packager.sizes import gib_text as _gib

GPU_MEMORY_UTILIZATION = 0.90  # vLLM's default share of each GPU
ACTIVATION_BYTES = 2 * GIB  # per GPU: activations at the profiled batch, CUDA graphs, the CUDA context
RUNTIME_BYTES = 2 * GIB  # host memory of one server or worker process: Python, torch, the engine, the tokenizer
CPU_KV_BYTES = 1 * GIB  # VLLM_CPU_KVCACHE_SPACE the image sets unless told otherwise
QUANTIZED_BYTES = {"w8a8": 1.0, "w8a16": 1.0, "fp8": 1.0, "w4a16": 0.5, "bnb-nf4": 0.5, "bnb-int8": 1.0}
KEEP_FULL = ("embed", "lm_head", "wte", "wpe", "embed_in", "embed_out")  # quantizers leave these 16-bit
MAX_NODES = 64
LOAD_SCHEMES = {"bnb-nf4": "bnb-nf4", "bnb-int8": "bnb-int8", "fp8": "fp8"}  # quantized by the engine at load
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def served_bytes(tensors: dict[str, Any], scheme: str) -> int:
    """The weights' bytes as served: `tensors` name -> TensorInfo (dtype, shape); 2-D weights other than the
    embeddings and the output head at the scheme's bytes per element ("none": as stored)."""
    per_element = QUANTIZED_BYTES.get(scheme)
    total = 0.0
    for name, info in tensors.items():
        count = math.prod(info.shape)
        quantized = per_element is not None and len(info.shape) == 2 and not any(k in name for k in KEEP_FULL)
        total += count * (per_element if quantized else element_size(info.dtype))
    return int(total)


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Keys and values of one token over every layer: 2 x layers x KV heads x head size x bytes."""
    heads, kv_heads, layers, text = _attention(config)
    hidden = _first(text, ("hidden_size", "n_embd", "d_model")) or 0
    head_dim = _first(text, ("head_dim",)) or hidden // heads
    return 2 * (layers or 0) * kv_heads * head_dim * dtype_bytes


def size(
    config: dict[str, Any], weights: int, kv_dtype_bytes: int, context: int, target: Target, upcast: bool = False
) -> Sizing:
    """The pod's size for this model on `target`; refused in one line when no allowed layout holds it.
    `upcast`: on CPU the 16-bit weights may be served in float32 (vLLM on CPUs without bf16 kernels)."""
    per_token = kv_bytes_per_token(config, kv_dtype_bytes)
    if target.device != "cuda":
        return _cpu(weights, per_token, target, upcast)
    kv = per_token * context * target.max_num_seqs
    budget = int(target.gpu_memory_gib * GIB * GPU_MEMORY_UTILIZATION) - ACTIVATION_BYTES
    heads, kv_heads, layers, _ = _attention(config)
    layers = layers or 1
    choices = [t for t in range(1, target.gpus_per_node + 1) if _splits(heads, kv_heads, t)]
    for tp, pp in [(t, 1) for t in choices] + [(choices[-1], p) for p in range(2, min(layers, MAX_NODES) + 1)]:
        if (weights + kv) / (tp * pp) <= budget:
            return _gpu(weights, per_token, kv, tp, pp, target, budget)
    per_gpu = (weights + kv) / (choices[-1] * min(layers, MAX_NODES))
    raise UserInputError(
        f"the model needs {_gib(weights)} of weights + {_gib(kv)} of KV cache ({target.max_num_seqs} sequences x "
        f"{context} tokens), {_gib(per_gpu)} per GPU even over {min(layers, MAX_NODES)} nodes of "
        f"{choices[-1]} GPUs, above the {_gib(budget)} each {target.gpu_memory_gib:g} GiB GPU offers; pass "
        "--max-model-len or --max-num-seqs lower, --quantize, or larger --gpu-memory"
    )


def _gpu(weights: int, per_token: int, kv: int, tp: int, pp: int, target: Target, budget: int) -> Sizing:
    gpus = tp * pp
    shm = max(1, 2 * tp) * GIB  # NCCL's buffers between a node's GPUs
    request = RUNTIME_BYTES * (1 + tp) + shm  # the API server and one worker process per GPU, each with torch
    arithmetic = (
        f"weights {_gib(weights)} + KV cache {_gib(kv)} ({_gib(per_token * 1024)} per 1k tokens x "
        f"{target.max_num_seqs} sequences) = {_gib(weights + kv)}",
        f"each GPU offers {target.gpu_memory_gib:g} GiB x {GPU_MEMORY_UTILIZATION} - {_gib(ACTIVATION_BYTES)} "
        f"(activations, CUDA graphs) = {_gib(budget)}",
        f"tensor parallel {tp} x pipeline {pp} = {gpus} GPU(s): {_gib((weights + kv) / gpus)} each "
        f"({'one node' if pp == 1 else f'{pp} nodes of {tp} GPUs'})",
    )
    return Sizing("cuda", weights, per_token, kv, target.max_num_seqs, tp, pp, int(target.gpu_memory_gib * GIB),
                  request, request + weights // pp, 2 + tp, shm, arithmetic)  # fmt: skip


def _cpu(weights: int, per_token: int, target: Target, upcast: bool) -> Sizing:
    loaded = 2 * weights if upcast else weights
    request = loaded + CPU_KV_BYTES + RUNTIME_BYTES
    why = " x 2 (16-bit served in float32 where the CPU lacks bf16 kernels)" if upcast else ""
    arithmetic = (
        f"weights {_gib(weights)}{why} + KV cache {_gib(CPU_KV_BYTES)} (VLLM_CPU_KVCACHE_SPACE; "
        f"{_gib(per_token * 1024)} per 1k tokens) + runtime {_gib(RUNTIME_BYTES)} = {_gib(request)} of memory",
    )
    return Sizing("cpu", weights, per_token, CPU_KV_BYTES, target.max_num_seqs, memory_request_bytes=request,
                  memory_limit_bytes=request + request // 4, arithmetic=arithmetic)  # fmt: skip


def _attention(config: dict[str, Any]) -> tuple[int, int, int | None, dict[str, Any]]:
    """Attention heads, KV heads and layers (None when unnamed) by each family's names, and the text config
    (a vision-language model's `text_config`) they come from."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = _first(text, ("num_attention_heads", "n_head", "num_heads")) or 1
    kv_heads = _first(text, ("num_key_value_heads", "multi_query_group_num")) or heads
    return heads, kv_heads, _first(text, ("num_hidden_layers", "n_layer", "num_layers")), text


def _splits(heads: int, kv_heads: int, tp: int) -> bool:
    """vLLM splits attention heads evenly, and replicates KV heads when there are fewer than GPUs."""
    return heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0)


def _first(config: dict[str, Any], names: tuple[str, ...]) -> int | None:
    return next((config[n] for n in names if isinstance(config.get(n), int) and not isinstance(config[n], bool)), None)


def plan_sizing(plan: Any, tensors: dict[str, Any], target: Target) -> Sizing:
    """The plan's pod size: its served weights (the merge's tensors, else the base's `tensors`; file sizes for a
    pickled base), the KV cache at the runtime's context, on `target` (one sequence for packager's server)."""
    image, artefact = plan.image, plan.artefact
    scheme = artefact.quantize if artefact.streamed else LOAD_SCHEMES.get(artefact.load_quantization, "none")
    table = {t.name: t for t in plan.merge.tensors} if plan.merge is not None else tensors
    weights = served_bytes(table, scheme) if table else sum(f.size for f in plan.base.files)
    merged = plan.merge.dtype if plan.merge is not None else "auto"
    dtype = merged if merged != "auto" else plan.base.fingerprint.dtype
    kv_bytes = 4 if str(dtype) in ("float32", "F32") else 2
    config = _config(plan.base.path)
    vllm = image.engine == "vllm"
    context = image.runtime.vllm.max_model_len if vllm else _first(config, CONTEXT_KEYS) or 2048
    sequences = target.max_num_seqs if vllm else 1  # packager's server answers one request at a time
    on = Target(target.device, target.gpu_memory_gib, target.gpus_per_node, sequences)
    sizing = size(config, weights, kv_bytes, context, on, upcast=vllm and kv_bytes == 2)
    if not vllm and sizing.gpus * sizing.nodes > 1:
        raise UserInputError(
            f"the model needs {sizing.gpus * sizing.nodes} GPUs ({sizing.arithmetic[-1]}), and packager's server "
            "runs on one; serve it with vLLM (--runtime vllm), or pass --quantize or a larger --gpu-memory"
        )
    return sizing


def _config(path: str) -> dict[str, Any]:
    from packager.resolve.architecture import read_config

    return read_config(path)
