"""Which tensors a scheme quantizes and with what group size is decided from headers and config, before any work;
a model the scheme cannot take is refused in one line that names the layer and what works instead."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from packager.errors import UserInputError
from packager.quantize.plan import plan_folder_quantization
from tests import models


def test_every_linear_but_the_output_projection_is_quantized(bases) -> None:
    plan = plan_folder_quantization(bases["llama"], "w8a8")
    assert (plan.preset, plan.group_size, plan.ignore, plan.notes) == ("W8A8", None, ("lm_head",), ())
    assert len(plan.targets) == 2 * 7 and all(t.startswith("model.layers.") for t in plan.targets)
    assert "model.layers.0.self_attn.q_proj.weight" in plan.targets
    assert plan.summary()["targets"] == "14 weight tensors"


def test_a_tied_output_projection_is_left_alone_too(bases) -> None:
    plan = plan_folder_quantization(bases["llama-tied"], "fp8")
    assert not any("embed" in t or "lm_head" in t for t in plan.targets) and plan.preset == "FP8_DYNAMIC"
    assert plan.ignore == ("lm_head",)  # not stored (tied), still a Linear the loaders must leave alone


def test_grouped_schemes_fall_back_to_a_group_size_that_fits_and_say_so(bases) -> None:
    plan = plan_folder_quantization(bases["llama"], "w4a16")  # hidden 64: not a multiple of 128
    assert plan.group_size == 64
    assert plan.notes == (
        "w4a16: group size 64, not 128: model.layers.0.mlp.gate_proj takes 64 input columns, not a multiple of 128 "
        "(vLLM's Marlin GPU kernels need 128)",
    )


def test_widths_no_group_size_divides_are_refused(tmp_path) -> None:
    base = models.save_base(
        models.llama_config(hidden_size=48, intermediate_size=96, num_attention_heads=2), str(tmp_path)
    )
    with pytest.raises(UserInputError, match=r"w8a16 quantizes in groups.*takes 48, not a multiple of any group size.*"
                       r"use --quantize w8a8"):  # fmt: skip
        plan_folder_quantization(base, "w8a16")
    assert plan_folder_quantization(base, "w8a8").group_size is None  # per channel: any width


def test_conv1d_models_have_nothing_to_quantize(bases) -> None:
    with pytest.raises(UserInputError, match=r"no Linear layer to quantize.*Conv1D.*without --quantize"):
        plan_folder_quantization(bases["gpt2"], "w8a8")


def test_mixture_of_experts_routers_stay_unquantized(tmp_path) -> None:
    config = transformers.MixtralConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.MixtralForCausalLM(config).save_pretrained(tmp_path)
    plan = plan_folder_quantization(str(tmp_path), "w8a8")
    assert plan.ignore == ("lm_head", "model.layers.0.block_sparse_moe.gate")
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in plan.targets


def test_a_quantized_or_non_causal_folder_is_refused(bases, tmp_path) -> None:
    import shutil

    folder = tmp_path / "q"
    shutil.copytree(bases["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "awq"}}))
    with pytest.raises(UserInputError, match=r"quantized already \(awq\); quantize the unquantized merge"):
        plan_folder_quantization(str(folder), "w8a8")
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(UserInputError, match=r"causal LMs, and the model at .* is a SEQ_CLS model; .*--export onnx"):
        plan_folder_quantization(str(folder), "w8a8")
