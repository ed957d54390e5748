"""CPU pods: vLLM's KV space sized to one max-model-len sequence, the memory request holding it, and a node too
small for the model's context giving a shorter one (said), or a refusal where the user chose the context."""

from __future__ import annotations

import pytest

import tests.published_models as models
from packager.errors import UserInputError
from packager.sizes import GIB, Target
from packager.sizing.cpu import size_cpu_server, size_cpu_vllm
from packager.sizing.shape import model_shape

SHAPE = model_shape(models.LLAMA_8B)
WEIGHTS = 8_030_261_248 * 2


def test_the_kv_space_holds_one_sequence_of_the_context_and_the_request_includes_it() -> None:
    """8192 tokens x 128 KiB = 1 GiB and vLLM's null block: 2 GiB of VLLM_CPU_KVCACHE_SPACE (the old fixed 1 GiB
    could not start it)."""
    sizing = size_cpu_vllm(SHAPE, WEIGHTS, Target(), 8192, 2, upcast=False, fixed=False)
    assert sizing.kv_cache_space_gib == 2 and sizing.max_model_len == 8192
    assert sizing.memory_request_bytes == WEIGHTS + 2 * GIB + 2 * GIB
    assert "VLLM_CPU_KVCACHE_SPACE" in sizing.arithmetic[0]


def test_16_bit_weights_served_in_float32_double_the_weights_and_the_cache() -> None:
    sizing = size_cpu_vllm(SHAPE, WEIGHTS, Target(), 8192, 2, upcast=True, fixed=False)
    assert sizing.kv_cache_space_gib == 3 and sizing.memory_request_bytes == 2 * WEIGHTS + 3 * GIB + 2 * GIB
    fp8 = size_cpu_vllm(SHAPE, WEIGHTS, Target(kv_cache_dtype="fp8"), 8192, 1, upcast=True, fixed=False)
    assert fp8.kv_cache_space_gib == 1, "an fp8 cache does not follow the weights to float32"


def test_a_node_too_small_for_the_models_context_gets_the_longest_that_fits_and_says_so() -> None:
    sizing = size_cpu_vllm(SHAPE, WEIGHTS, Target(cpu_memory_gib=48), 131072, 2, upcast=True, fixed=False)
    assert sizing.memory_request_bytes <= 48 * GIB and sizing.max_model_len == 65280
    assert "max-model-len lowered from 131,072 to 65,280" in sizing.arithmetic[-1]


def test_a_chosen_context_is_never_lowered_but_refused_in_one_line() -> None:
    refused = r"^one 131,072-token sequence needs .* pass at most --max-model-len 65280$"
    with pytest.raises(UserInputError, match=refused):
        size_cpu_vllm(SHAPE, WEIGHTS, Target(cpu_memory_gib=48), 131072, 2, upcast=True, fixed=True)
    with pytest.raises(UserInputError, match="pass a larger --cpu-memory"):
        size_cpu_vllm(SHAPE, WEIGHTS, Target(cpu_memory_gib=16), 131072, 2, upcast=False, fixed=False)


def test_packagers_server_keeps_a_fixed_allowance() -> None:
    sizing = size_cpu_server(SHAPE, WEIGHTS, Target(), 131072)
    assert sizing.kv_cache_space_gib is None and sizing.memory_request_bytes == WEIGHTS + 3 * GIB
