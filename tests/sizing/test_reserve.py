"""vLLM's reserve besides weights and KV cache, against the figures vLLM's own start-up profiling measured
(llm-d's capacity planner, data/configuration/vllm_memory_constants.json: vLLM 0.19 on H100, 28 models)."""

from __future__ import annotations

import pytest

from packager.sizes import GIB
from packager.sizing.reserve import CUDA_GRAPHS, NON_TORCH_TP, NON_TORCH_TP1, default_batch, gpu_reserve
from packager.sizing.shape import model_shape


def dense(vocab: int, hidden: int = 4096, intermediate: int = 14336) -> dict:
    return {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "hidden_size": hidden, "intermediate_size": intermediate, "vocab_size": vocab}  # fmt: skip


@pytest.mark.parametrize(
    ("family", "vocab", "hidden", "intermediate", "measured"),
    [("Llama-3.1-8B", 128256, 4096, 14336, 1.89), ("Qwen2-7B", 152064, 3584, 18944, 2.25),
     ("Gemma-2-9B", 256000, 3584, 14336, 3.65), ("Granite-3.1-8B", 49155, 4096, 12800, 0.85),
     ("phi-4", 100352, 5120, 17920, 1.52)],
)  # fmt: skip
def test_the_activation_peak_is_what_vllm_profiled(family, vocab, hidden, intermediate, measured) -> None:
    """At vLLM's H100 defaults (8192 tokens, 1024 sequences), within 5% of the profiled peak."""
    reserve = gpu_reserve(model_shape(dense(vocab, hidden, intermediate)), 1, default_batch(80))
    assert reserve.activations / GIB == pytest.approx(measured, rel=0.05), family


def test_vllm_defaults_follow_the_gpu_and_the_users_cap() -> None:
    assert (default_batch(80).tokens, default_batch(80).sequences) == (8192, 1024)
    assert (default_batch(24).tokens, default_batch(24).sequences) == (2048, 256)
    assert (default_batch(180).tokens, default_batch(180, 64).sequences) == (16384, 64)


def test_tensor_parallelism_adds_its_communication_buffers() -> None:
    shape, batch = model_shape(dense(128256)), default_batch(80)
    one, two = gpu_reserve(shape, 1, batch), gpu_reserve(shape, 2, batch)
    assert (one.non_torch, two.non_torch, one.cuda_graphs) == (NON_TORCH_TP1, NON_TORCH_TP, CUDA_GRAPHS)
    assert "activations" in one.describe() and "CUDA graphs" in one.describe()


def test_a_wide_model_with_a_small_vocabulary_is_bound_by_its_forward_pass() -> None:
    wide = model_shape(dense(32000, hidden=16384, intermediate=53248))
    reserve = gpu_reserve(wide, 1, default_batch(80))
    assert reserve.activations > gpu_reserve(model_shape(dense(32000)), 1, default_batch(80)).activations
