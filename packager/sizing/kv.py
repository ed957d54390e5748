"""The KV cache as vLLM allocates it: what one sequence of a given length takes on one GPU of a pipeline stage
(the stage's layers; their KV heads split by tensor parallelism, one replicated head where there are fewer heads
than GPUs; MLA's latent on every GPU; a sliding-window layer only its window), and from a GPU's leftover memory,
how many such sequences the shared pool holds (vLLM's "Maximum concurrency for N tokens per request")."""

from __future__ import annotations

from dataclasses import dataclass

from packager.sizing.shape import ModelShape, held_tokens
from packager.sizing.weights import stage_layers


@dataclass(frozen=True)
class KvLayout:
    """How the cache is spread: tensor-parallel GPUs, pipeline stages, bytes per element, tokens per step."""

    tp: int
    pp: int
    dtype_bytes: int
    in_flight: int  # tokens scheduled in one step (max_num_batched_tokens): what a sliding window holds beyond itself


def per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """KV bytes one token adds over every full-attention layer of the whole model (on one GPU, unsplit)."""
    return sum(layer.slots * layer.width * dtype_bytes for layer in shape.layers if layer.window is None)


def sequence_bytes(shape: ModelShape, layout: KvLayout, length: int, stage: int = 0) -> int:
    """What one `length`-token sequence takes on one GPU of pipeline stage `stage`."""
    start, end = stage_layers(len(shape.layers), stage, layout.pp)
    total = 0
    for layer in shape.layers[start:end]:
        slot = layer.slots_per_gpu(layout.tp) * layer.width * layout.dtype_bytes
        total += slot * held_tokens(layer, length, layout.in_flight)
    return total


def worst_sequence_bytes(shape: ModelShape, layout: KvLayout, length: int) -> list[int]:
    """`sequence_bytes` for every pipeline stage."""
    return [sequence_bytes(shape, layout, length, stage) for stage in range(layout.pp)]


def concurrency(pools: list[int], shape: ModelShape, layout: KvLayout, length: int) -> float:
    """How many `length`-token sequences the pools (one per stage, bytes per GPU) hold at once: the least of the
    stages, as vLLM takes the fewest blocks any worker has."""
    needs = worst_sequence_bytes(shape, layout, length)
    return min((pool / need if need else float("inf")) for pool, need in zip(pools, needs, strict=True))


def longest_context(pools: list[int], shape: ModelShape, layout: KvLayout, limit: int) -> int:
    """The longest sequence (a multiple of 256 tokens, at most `limit`) one of which the pools hold; 0: none
    (vLLM's estimate_max_model_len, a binary search the same way)."""
    low, high = 0, limit // 256
    while low < high:
        middle = (low + high + 1) // 2
        if concurrency(pools, shape, layout, middle * 256) >= 1:
            low = middle
        else:
            high = middle - 1
    return low * 256
