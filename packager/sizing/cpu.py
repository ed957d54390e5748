"""CPU pods: vLLM's KV cache there is `VLLM_CPU_KVCACHE_SPACE` GiB, allocated whole at start, and the same start
rule applies (one `max_model_len` sequence must fit it). So the plan sizes that space to hold one sequence of the
served context, and the pod's memory request to hold the weights (doubled where vLLM serves 16-bit weights in
float32 on CPUs without bf16 kernels, and then the cache in float32 too), the space and the runtime. A pod that
would not fit the node (`--cpu-memory`) gets a shorter context, said in the plan, unless the user set
`--max-model-len`: then it is refused. packager's own server keeps no paged cache; it is given a fixed allowance."""

from __future__ import annotations

import math

from packager.errors import UserInputError
from packager.sizes import GIB, Sizing, Target, gib_text
from packager.sizing.kv import KvLayout, longest_context, per_token, sequence_bytes
from packager.sizing.shape import ModelShape

RUNTIME_BYTES = 2 * GIB  # the API server, the engine and the tokenizer
CPU_BATCHED_TOKENS = 2048  # vLLM's max_num_batched_tokens on CPU (the OpenAI server's default)
SERVER_KV_BYTES = 1 * GIB  # packager's server: its dynamic cache for the requests of one batch


def size_cpu_vllm(
    shape: ModelShape, weights: int, target: Target, length: int, dtype_bytes: int, upcast: bool, fixed: bool
) -> Sizing:
    """vLLM on CPU: the KV space that starts it at `length` tokens (`fixed`: the user chose it), within the node;
    `upcast`: 16-bit weights, which vLLM may serve in float32 (a cache of the model's dtype then doubles too)."""
    follows_model = target.kv_cache_dtype == "auto"
    kv = KvLayout(1, 1, dtype_bytes * (2 if upcast and follows_model else 1), CPU_BATCHED_TOKENS)
    loaded = 2 * weights if upcast else weights
    node = int(target.cpu_memory_gib * GIB)
    asked, space = length, _space(shape, kv, length)
    if loaded + space + RUNTIME_BYTES > node:
        length, space = _shorter(shape, kv, node - loaded - RUNTIME_BYTES, length, fixed, loaded, target)
    request = loaded + space + RUNTIME_BYTES
    why = " x 2 (16-bit served in float32 where the CPU lacks bf16 kernels)" if upcast else ""
    one = sequence_bytes(shape, kv, length)
    arithmetic = (
        f"weights {gib_text(weights)}{why} + KV space {space // GIB} GiB (VLLM_CPU_KVCACHE_SPACE: one {length:,}-"
        f"token sequence takes {gib_text(one)}) + runtime {gib_text(RUNTIME_BYTES)} = {gib_text(request)} of memory",
        f"the KV space holds {int(space / one * length) if one else 0:,} tokens ({space / one if one else 0:.1f} "
        f"sequence(s) of {length:,})",
        *(
            [
                f"max-model-len lowered from {asked:,} to {length:,}: the longest whose KV space fits the "
                f"{target.cpu_memory_gib:g} GiB node (--cpu-memory)"
            ]
            if length != asked
            else []
        ),
    )
    return Sizing(
        "cpu", weights, per_token(shape, kv.dtype_bytes), space, target.max_num_seqs,
        memory_request_bytes=request, memory_limit_bytes=request + request // 4, arithmetic=arithmetic,
        max_model_len=length, kv_tokens=int(space / one * length) if one else 0, kv_cache_space_gib=space // GIB,
        notes=shape.notes,
    )  # fmt: skip


def size_cpu_server(shape: ModelShape, weights: int, target: Target, length: int) -> Sizing:
    """packager's own server on CPU: the weights, its cache allowance and the runtime."""
    request = weights + SERVER_KV_BYTES + RUNTIME_BYTES
    arithmetic = (
        f"weights {gib_text(weights)} + KV {gib_text(SERVER_KV_BYTES)} (packager's server; "
        f"{gib_text(per_token(shape, 2) * 1024)} per 1k tokens) + runtime {gib_text(RUNTIME_BYTES)} = "
        f"{gib_text(request)} of memory",
    )
    return Sizing(
        "cpu", weights, per_token(shape, 2), SERVER_KV_BYTES, target.max_num_seqs, memory_request_bytes=request,
        memory_limit_bytes=request + request // 4, arithmetic=arithmetic, max_model_len=length, notes=shape.notes,
    )  # fmt: skip


def _space(shape: ModelShape, kv: KvLayout, length: int) -> int:
    """Whole GiB holding one sequence plus the block vLLM keeps back (its null block), at least 1."""
    block = sequence_bytes(shape, kv, 16)
    return max(1, math.ceil((sequence_bytes(shape, kv, length) + block) / GIB)) * GIB


def _shorter(
    shape: ModelShape, kv: KvLayout, room: int, length: int, fixed: bool, loaded: int, target: Target
) -> tuple[int, int]:
    """The longest context whose KV space fits `room` bytes of the node, and that space."""
    space = (room // GIB) * GIB
    block = sequence_bytes(shape, kv, 16)
    longest = longest_context([space - block], shape, kv, length) if space >= GIB else 0
    if fixed or not longest:
        fits = f"at most --max-model-len {longest}" if longest else "a larger --cpu-memory"
        raise UserInputError(
            f"one {length:,}-token sequence needs {gib_text(_space(shape, kv, length))} of vLLM's CPU KV space, and "
            f"with {gib_text(loaded)} of weights and {gib_text(RUNTIME_BYTES)} of runtime the "
            f"{target.cpu_memory_gib:g} GiB node (--cpu-memory) leaves {gib_text(max(room, 0))}; pass {fits}"
        )
    return longest, space
