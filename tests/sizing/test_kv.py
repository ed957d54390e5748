"""The KV cache of one sequence on one GPU, and what a pool holds, as vLLM's paged cache allocates them."""

from __future__ import annotations

import tests.published_models as models
from packager.sizing.kv import KvLayout, concurrency, longest_context, per_token, sequence_bytes
from packager.sizing.shape import model_shape

LLAMA_70B = model_shape(models.LLAMA_70B)


def test_a_token_costs_two_x_layers_x_kv_heads_x_head_size_x_bytes() -> None:
    assert per_token(LLAMA_70B, 2) == 2 * 80 * 8 * 128 * 2 == 327680
    assert per_token(LLAMA_70B, 1) == 163840  # --kv-cache-dtype fp8 halves it


def test_tensor_parallelism_splits_kv_heads_and_replicates_one_where_there_are_fewer_heads_than_gpus() -> None:
    one = sequence_bytes(LLAMA_70B, KvLayout(1, 1, 2, 8192), 8192)
    assert one == 327680 * 8192
    assert sequence_bytes(LLAMA_70B, KvLayout(4, 1, 2, 8192), 8192) == one // 4
    assert sequence_bytes(LLAMA_70B, KvLayout(16, 1, 2, 8192), 8192) == one // 8  # 8 KV heads: 1 each, replicated


def test_pipeline_stages_hold_their_own_layers() -> None:
    stages = [sequence_bytes(LLAMA_70B, KvLayout(8, 3, 2, 8192), 4096, s) for s in range(3)]
    assert stages == [27 * 2 * 128 * 2 * 4096, 27 * 2 * 128 * 2 * 4096, 26 * 2 * 128 * 2 * 4096]


def test_the_longest_context_is_the_longest_one_sequence_of_which_the_pool_holds() -> None:
    layout, pool = KvLayout(2, 1, 2, 8192), 6 << 30
    longest = longest_context([pool], LLAMA_70B, layout, 131072)
    assert longest % 256 == 0
    assert concurrency([pool], LLAMA_70B, layout, longest) >= 1 > concurrency([pool], LLAMA_70B, layout, longest + 256)


def test_a_sliding_window_model_holds_many_more_long_sequences_than_its_full_layers_alone_suggest() -> None:
    gpt_oss = model_shape(models.GPT_OSS_120B)
    layout = KvLayout(1, 1, 2, 8192)
    full_only = per_token(gpt_oss, 2) * 131072
    assert full_only < sequence_bytes(gpt_oss, layout, 131072) < 1.1 * full_only
