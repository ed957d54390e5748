"""The transformers-free architecture table must agree with the meta-device model it stands in for."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from packager.architecture.inspect import inspect_architecture, inspect_meta_architecture
from packager.architecture.known import DECODER_FAMILIES
from packager.architecture.weights import index_base_weights
from tests.models import TINY


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("model_type", sorted(DECODER_FAMILIES))
def test_table_matches_the_meta_model(model_type, tied, tmp_path) -> None:
    config = AutoConfig.for_model(model_type, **TINY, tie_word_embeddings=tied, attention_bias=True, pad_token_id=0)
    config.architectures = [DECODER_FAMILIES[model_type]]
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    weights = index_base_weights(str(tmp_path), allow_pickle=False)
    fast = inspect_architecture(str(tmp_path), weights.tensors)
    meta = inspect_meta_architecture(str(tmp_path))
    assert fast is not meta and fast.fingerprint == meta.fingerprint
    assert (fast.input_embedding, fast.output_embedding) == (meta.input_embedding, meta.output_embedding)
    for module, kind in fast.module_kinds.items():
        assert meta.module_kinds[module] == kind, module
    with_weights = {n for n, k in meta.module_kinds.items() if k in ("linear", "conv1d", "embedding")}
    assert with_weights <= set(fast.module_kinds)


def test_other_families_fall_back_to_the_meta_model(bases) -> None:
    weights = index_base_weights(bases["gpt2"], allow_pickle=False)
    arch = inspect_architecture(bases["gpt2"], weights.tensors)
    assert arch.module_kinds["transformer.h.0.attn.c_attn"] == "conv1d"  # only the meta model knows this
