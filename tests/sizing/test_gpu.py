"""GPU layouts by vLLM's start rule, against hand computation on Llama-3.1 shapes (sizes from the headers):
the fewest GPUs whose share of weights, vLLM's reserve and one max-model-len sequence fit each GPU, the options
on fewer GPUs, capacity only when asked, expert parallelism where vLLM needs it, and the one-line refusal."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tests.published_models as models
from packager.errors import UserInputError
from packager.sizes import GIB, Target
from packager.sizing import size_model


def tensors(entries) -> dict:
    return {name: SimpleNamespace(dtype=dtype, shape=shape) for name, dtype, shape in entries}


LLAMA = {name: (config, tensors(models.llama(config))) for name, config in
         (("8b", models.LLAMA_8B), ("70b", models.LLAMA_70B), ("405b", models.LLAMA_405B))}  # fmt: skip


def sized(name: str, length: int | None = None, quantized: float | None = None, **target):
    config, table = LLAMA[name]
    linear = {n: quantized for n, t in table.items() if quantized and len(t.shape) == 2 and "proj" in n}
    return size_model(config, table, Target("cuda", **target), length, linear)


def test_an_8b_at_full_context_takes_one_80_gib_gpu() -> None:
    """15.0 GiB + 2.7 GiB reserved + 16 GiB for one 131,072-token sequence (128 KiB a token) = 33.6 <= 72."""
    sizing = sized("8b")
    assert (sizing.tensor_parallel, sizing.pipeline_parallel) == (1, 1)
    assert "one 131,072-token sequence takes 16.0 GiB per GPU" in sizing.arithmetic[1]
    assert sizing.kv_pool_per_gpu / GIB == pytest.approx(72 - 14.96 - 2.68, abs=0.05)
    assert sizing.concurrency[0] == (131072, pytest.approx(sizing.kv_pool_per_gpu / (16 * GIB), abs=0.01))


def test_an_8b_on_24_gib_gpus_takes_two_or_one_at_a_shorter_context() -> None:
    sizing = sized("8b", gpu_memory_gib=24)
    assert sizing.tensor_parallel == 2
    assert sizing.options == ("1 GPU(s) (tensor parallel 1) with --max-model-len 42752",)
    short = sized("8b", 42752, gpu_memory_gib=24)
    assert short.tensor_parallel == 1, "the option offered starts"
    assert sized("8b", 42752 + 256, gpu_memory_gib=24).tensor_parallel == 2, "and is the longest that does"
    assert sized("8b", 8192, gpu_memory_gib=24).tensor_parallel == 1


def test_an_8b_on_16_gib_gpus_takes_four() -> None:
    sizing = sized("8b", gpu_memory_gib=16)
    assert sizing.tensor_parallel == 4 and sizing.options[-1].startswith("2 GPU(s) (tensor parallel 2) with")


def test_a_70b_in_bf16_takes_four_at_full_context_and_two_at_8192_tokens() -> None:
    """TP 2: 65.7 + 4.5 + 20 GiB > 72 at 131072 tokens; 65.7 + 4.5 + 1.25 = 71.5 <= 72 at 8192."""
    assert sized("70b").tensor_parallel == 4
    assert sized("70b", 8192).tensor_parallel == 2


def test_fp8_weights_halve_a_70b_and_put_a_405b_on_one_node() -> None:
    assert sized("70b", quantized=1.0).tensor_parallel == 2
    fp8 = sized("405b", quantized=1.0)
    assert (fp8.tensor_parallel, fp8.pipeline_parallel) == (8, 1)
    bf16 = sized("405b")
    assert (bf16.tensor_parallel, bf16.pipeline_parallel) == (8, 2)
    assert "2 nodes of 8 GPUs" in bf16.layout


def test_fp8_kv_cache_holds_twice_the_tokens() -> None:
    auto, fp8 = sized("8b"), sized("8b", kv_cache_dtype="fp8")
    assert fp8.kv_tokens == pytest.approx(2 * auto.kv_tokens, rel=0.001)
    assert "--kv-cache-dtype fp8" in fp8.arithmetic[1]


def test_a_shorter_context_on_fewer_gpus_is_offered_with_a_larger_share_when_that_is_what_it_takes() -> None:
    sizing = sized("70b", 20000)
    assert sizing.tensor_parallel == 4
    assert sizing.options == ("2 GPU(s) (tensor parallel 2) at 20,000 tokens with --gpu-memory-utilization 0.92",)
    assert sized("70b", 20000, gpu_memory_utilization=0.92).tensor_parallel == 2


def test_capacity_is_reserved_only_when_asked() -> None:
    """16 sequences of 131072 tokens (256 GiB of KV for the 8B) were once reserved by default: 4 GPUs."""
    assert sized("8b").tensor_parallel == 1
    assert sized("8b", concurrency=16).tensor_parallel == 8
    assert sized("8b", concurrency=64, tokens_per_request=4096).tensor_parallel == 1
    many = sized("8b", kv_tokens=2_000_000)  # TP 2 leaves 60 GiB a GPU: 0.98M tokens; TP 4: 63.8 GiB, 2.09M
    assert many.tensor_parallel == 4 and many.kv_tokens >= 2_000_000


def test_the_max_num_seqs_cap_is_passed_through_and_shrinks_only_the_sampler() -> None:
    assert sized("8b", max_num_seqs=64).max_num_seqs == 64
    assert sized("8b").max_num_seqs is None
    assert sized("8b", max_num_seqs=64).kv_pool_per_gpu > sized("8b").kv_pool_per_gpu


def test_tensor_parallelism_divides_the_heads() -> None:
    config, table = LLAMA["70b"]
    odd = {**config, "num_attention_heads": 40, "num_key_value_heads": 8}  # 40 heads: no 3, 6 or 7
    assert size_model(odd, table, Target("cuda", gpu_memory_gib=64), 8192).tensor_parallel == 4  # 3 would fit


def test_a_block_quantized_moe_that_cannot_split_its_experts_is_spread_instead() -> None:
    """Qwen3-235B-FP8: 1536 / 8 = 192, not a multiple of its 128-wide blocks; vLLM refuses TP 8 without
    --enable-expert-parallel (the recipe caps TP at 4 for it)."""
    config = {**models.QWEN3_235B_FP8, "num_hidden_layers": 4}
    table = tensors(models.qwen3_moe(config))
    sizing = size_model(config, table, Target("cuda", gpu_memory_gib=10), 4096)
    assert (sizing.tensor_parallel, sizing.expert_parallel) == (8, True)
    assert "192 is not a multiple" not in sizing.layout and "1536 / tensor parallel 8" in sizing.arithmetic[-2]
    asked = size_model(config, table, Target("cuda", gpu_memory_gib=10, expert_parallel=True), 4096)
    assert asked.expert_parallel and not any(line.startswith("expert parallel:") for line in asked.arithmetic)


def test_a_model_no_layout_starts_is_refused_in_one_line_with_the_figures_and_the_fixes() -> None:
    with pytest.raises(UserInputError) as refused:
        sized("405b", gpu_memory_gib=16, gpus_per_node=1)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("no layout starts this model: even tensor parallel 1 x")
    assert message.endswith("--quantize, --kv-cache-dtype fp8 or a larger --gpu-memory")


def test_a_shared_images_lora_slots_are_reserved_as_vllm_allocates_them() -> None:
    """4 slots of rank 64 on every Linear of the 8B (32 layers x 81,920 in + out): 4 x 64 x 2,621,440 x 2 bytes
    = 1.25 GiB a GPU, taken from the KV pool."""
    from packager.sizing import size_served
    from packager.sizing.shape import model_shape
    from packager.sizing.weights import served_weights

    config, table = LLAMA["8b"]
    shape, weights = model_shape(config), served_weights(table, model_shape(config), {}, config)
    plain = size_served(shape, weights, Target("cuda"), 131072)
    shared = size_served(shape, weights, Target("cuda"), 131072, lora=(4, 64))
    assert plain.kv_pool_per_gpu - shared.kv_pool_per_gpu == 4 * 64 * 32 * 81920 * 2
    assert "LoRA slots 1.2 GiB" in shared.arithmetic[2]
