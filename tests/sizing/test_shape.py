"""How the sizing reads a model's config: KV heads and head size by each family's names, multi-head latent
attention, sliding-window layers (listed, or left to transformers' config class), recurrent layers, and the
notes that say which reading was taken."""

from __future__ import annotations

import json

import pytest

import tests.published_models as models
from packager.sizing import read_shape
from packager.sizing.shape import LayerCache, held_tokens, model_shape


def test_a_grouped_query_llama_keeps_two_heads_of_its_head_size_per_kv_head() -> None:
    shape = model_shape(models.LLAMA_8B)
    assert len(shape.layers) == 32 and shape.layers[0] == LayerCache(8, 256)
    assert (shape.heads, shape.kv_heads, shape.vocab, shape.context) == (32, 8, 128256, 131072)
    assert shape.notes == ()  # head_dim is in the config: nothing to say


def test_a_config_without_kv_heads_or_head_dim_is_multi_head_and_says_how_the_head_size_was_found() -> None:
    shape = model_shape({"n_layer": 2, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024})
    assert shape.layers == (LayerCache(12, 128),) * 2 and shape.context == 1024
    assert shape.notes == ("KV: no head_dim in the config: hidden 768 / 12 heads = 64",)


def test_old_multi_query_models_keep_one_kv_head() -> None:
    falcon = {"num_hidden_layers": 1, "num_attention_heads": 71, "hidden_size": 4544, "multi_query": True}
    assert model_shape(falcon).kv_heads == 1
    assert model_shape({**falcon, "new_decoder_architecture": True, "num_kv_heads": 8}).kv_heads == 8


def test_multi_head_latent_attention_caches_one_latent_the_same_on_every_gpu() -> None:
    """DeepSeek-V3: 61 x (512 + 64) x 2 bytes = 70,272 bytes per token (the issue's ~70 KB), not split by tensor
    parallelism (vLLM's recipe log for Kimi-K2: 46.80 GiB held 715,072 tokens on each of 8 GPUs)."""
    shape = model_shape(models.DEEPSEEK_V3)
    assert shape.layers[0] == LayerCache(1, 576, split=False) and shape.layers[0].slots_per_gpu(8) == 1
    assert sum(layer.width * 2 for layer in shape.layers) == 70272
    assert "multi-head latent attention" in shape.notes[0]
    assert (shape.experts, shape.experts_per_token, shape.moe_intermediate, shape.block_n) == (256, 8, 2048, 128)


def test_listed_sliding_window_layers_keep_their_window() -> None:
    shape = model_shape(models.GPT_OSS_120B)
    assert [layer.window for layer in shape.layers[:4]] == [128, None, 128, None]
    assert shape.notes == ("18 of 36 layers keep only a sliding window (layer_types)",)


@pytest.mark.parametrize(
    ("config", "sliding", "note"),
    [
        (models.GEMMA3_27B, 52, "52 of 62 layers"),  # sliding_window_pattern 6: transformers' Gemma3 default
        ({**models.LLAMA_8B, "model_type": "mistral", "architectures": ["MistralForCausalLM"],
          "sliding_window": 4096}, 32, "every layer keeps a sliding window of 4096"),  # no layer_types: all
        ({**models.LLAMA_8B, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "sliding_window": 4096,
          "use_sliding_window": False}, 0, None),  # set but switched off
    ],
    ids=["gemma3-pattern", "mistral-every-layer", "qwen2-off"],
)  # fmt: skip
def test_a_window_without_layer_types_is_read_as_transformers_reads_it(tmp_path, config, sliding, note) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_shape(str(tmp_path), config)
    assert sum(layer.window is not None for layer in shape.layers) == sliding
    assert (note is None and not shape.notes) or any(note in n for n in shape.notes)


def test_recurrent_layers_keep_no_per_token_cache_and_are_said_to() -> None:
    config = {**models.LLAMA_8B, "num_hidden_layers": 4, "layer_types": ["linear_attention", "full_attention"] * 2}
    shape = model_shape(config)
    assert [layer.slots for layer in shape.layers] == [0, 8, 0, 8]
    assert "2 of 4 layers keep a fixed recurrent state" in shape.notes[0]


def test_a_full_layer_holds_every_token_and_a_window_its_window_and_one_step() -> None:
    """vLLM's paged cache in 16-token blocks; a sliding window holds window - 1 + the tokens of one step, and a
    block more (SlidingWindowSpec)."""
    assert held_tokens(LayerCache(8, 256), 1000, 8192) == 1008
    assert held_tokens(LayerCache(8, 256, window=128), 131072, 8192) == (-(-(127 + 8192) // 16) + 1) * 16
    assert held_tokens(LayerCache(8, 256, window=4096), 100, 8192) == 128  # never more than the sequence
