"""Served bytes from the headers: grouped by layer and pipeline stage as vLLM partitions them, quantized widths
where packager or the engine quantizes, layers past num_hidden_layers not loaded, MXFP4 padded on load."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tests.published_models as models
from packager.sizing.shape import model_shape
from packager.sizing.weights import served_weights, stage_layers


def table(entries) -> dict:
    return {name: SimpleNamespace(dtype=dtype, shape=shape) for name, dtype, shape in entries}


@pytest.mark.parametrize(
    ("layers", "stages", "sizes"),
    [(126, 2, [63, 63]), (61, 2, [31, 30]), (80, 3, [27, 27, 26]), (10, 4, [2, 3, 3, 2])],
)
def test_stages_split_layers_as_vllm_does(layers, stages, sizes) -> None:
    """vllm.distributed.utils.get_pp_indices: an even split, the remainder on the stages before the last."""
    spans = [stage_layers(layers, i, stages) for i in range(stages)]
    assert [end - start for start, end in spans] == sizes and spans[-1][1] == layers


def test_embeddings_sit_on_the_first_stage_and_the_head_on_the_last() -> None:
    weights = served_weights(table(models.llama(models.LLAMA_8B)), model_shape(models.LLAMA_8B), {}, models.LLAMA_8B)
    embed = 128256 * 4096 * 2
    assert weights.first == embed and weights.last == embed + 4096 * 2
    assert weights.total == 8_030_261_248 * 2  # Llama-3.1-8B: 8.03B parameters in bf16
    assert weights.stage(0, 2) - weights.stage(1, 2) == embed - weights.last


def test_quantized_tensors_are_counted_at_their_width() -> None:
    entries = models.llama(models.LLAMA_8B)
    linear = {name: 1.0 for name, _, shape in entries if len(shape) == 2 and "proj" in name}
    weights = served_weights(table(entries), model_shape(models.LLAMA_8B), linear, models.LLAMA_8B)
    assert weights.total == sum(int(shape[0] * shape[1] * (1 if name in linear else 2)) if len(shape) == 2 else
                                shape[0] * 2 for name, _, shape in entries)  # fmt: skip


def test_layers_past_num_hidden_layers_are_stored_but_not_loaded() -> None:
    """DeepSeek-V3's multi-token-prediction module, layer 61: 11.5B parameters vLLM's main model skips."""
    config = {**models.DEEPSEEK_V3, "n_routed_experts": 4}
    weights = served_weights(table(models.deepseek_v3(config)), model_shape(config), {}, config)
    assert len(weights.layers) == 61 and weights.skipped > 0
    assert weights.skipped == pytest.approx(weights.layers[60] + 2 * 7168 * 14336 + 3 * 7168 * 2, rel=0.01)


def test_mxfp4_experts_take_what_the_kernel_pads_them_to() -> None:
    """vLLM's MXFP4 MoE on Hopper (Marlin) rounds hidden up to 256 and the expert width to 128: 3072/2880 x
    2944/2880 for gpt-oss."""
    config = {**models.GPT_OSS_120B, "num_hidden_layers": 2, "layer_types": ["full_attention"] * 2}
    entries = models.gpt_oss(config)
    weights = served_weights(table(entries), model_shape(config), {}, config)
    stored = {name: shape for name, dtype, shape in entries if dtype == "U8"}
    u8 = sum(int(__import__("math").prod(shape)) for shape in stored.values())
    bf16 = sum(2 * int(__import__("math").prod(shape)) for _, dtype, shape in entries if dtype == "BF16")
    assert weights.total == pytest.approx(u8 * 3072 / 2880 * 2944 / 2880 + bf16, rel=1e-6)


def test_a_vision_tower_is_not_taken_for_decoder_layers() -> None:
    weights = served_weights(table(models.gemma3(models.GEMMA3_27B)), model_shape(models.GEMMA3_27B), {},
                             models.GEMMA3_27B)  # fmt: skip
    assert len(weights.layers) == 62 and min(weights.layers) == max(weights.layers)
    assert weights.first > 262208 * 5376 * 2  # the embeddings, the vision tower and the projector
