"""The streaming merge is tensor-for-tensor equal to PEFT's merge_and_unload (fp32 exact, bf16 identical)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from tests import models

LLAMA_QV = {"target_modules": ["q_proj", "v_proj"]}
CASES = {
    "llama-default": ("llama", LLAMA_QV),
    "llama-rslora": ("llama", {**LLAMA_QV, "use_rslora": True, "r": 8, "lora_alpha": 16}),
    "llama-rank-alpha-pattern": (
        "llama",
        {
            "target_modules": ["q_proj", "v_proj", "down_proj"],
            "rank_pattern": {"layers.0.self_attn.q_proj": 8},
            "alpha_pattern": {"down_proj": 3},
        },
    ),
    "llama-regex-targets": ("llama", {"target_modules": r".*\.(k_proj|up_proj)"}),
    "llama-all-linear": ("llama", {"target_modules": "all-linear"}),
    "llama-layers-to-transform": ("llama", {**LLAMA_QV, "layers_to_transform": [1]}),
    "llama-modules-to-save": ("llama", {**LLAMA_QV, "modules_to_save": ["lm_head"]}),
    "llama-lora-embeddings": ("llama", {"target_modules": ["embed_tokens", "lm_head", "q_proj"]}),
    "llama-tied-lora-lm-head": ("llama-tied", {"target_modules": ["lm_head", "v_proj"]}),
    "llama-tied-save-lm-head": ("llama-tied", {**LLAMA_QV, "modules_to_save": ["lm_head"]}),
    "gpt2-conv1d": ("gpt2", {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True}),
    "gpt2-conv1d-flag-missing": ("gpt2", {"target_modules": ["c_attn"]}),
    "qwen2-bias-all": ("qwen2", {"target_modules": ["q_proj", "k_proj"], "bias": "all"}),
    "qwen2-bias-lora-only": ("qwen2", {"target_modules": ["q_proj", "v_proj"], "bias": "lora_only"}),
    "qwen2-lora-bias": ("qwen2", {"target_modules": ["q_proj", "k_proj", "v_proj"], "lora_bias": True}),
    "llama-sharded-base": ("llama-sharded", {"target_modules": "all-linear"}),
    "llama-bf16": ("llama-bf16", {"target_modules": ["q_proj", "v_proj", "gate_proj", "lm_head"]}),
    "gpt2-bf16": ("gpt2-bf16", {"target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True}),
}

# LoRA on a tied lm_head: PEFT's merge adds the delta to the shared tensor, so the input embeddings change
# too and the merged model no longer answers like the adapter (PEFT #2777). packager writes lm_head untied;
# parity against the unmerged PeftModel (checked in every case) proves it right.
UNTIED_BY_PACKAGER = {"llama-tied-lora-lm-head"}


def merge(adapter: str, output: str, **request) -> object:
    return run_merge(ResolveRequest(adapter, **request), output, quiet=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_merge_equals_peft_merge(case: str, bases: dict[str, str], tmp_path) -> None:
    base_name, lora = CASES[case]
    base = bases[base_name]
    adapter = models.save_adapter(base, str(tmp_path / "adapter"), **lora)
    dtype = torch.bfloat16 if base_name.endswith("bf16") else torch.float32

    outcome = merge(adapter, str(tmp_path / "out"), base=base)

    assert outcome.result.plan.merge.engine == "stream"
    assert outcome.parity is not None and outcome.parity.passed
    expected = models.peft_merged_state(base, adapter, dtype)
    base_state = models.loaded_state(base, dtype)
    if case in UNTIED_BY_PACKAGER:
        expected["model.embed_tokens.weight"] = base_state["model.embed_tokens.weight"]
    models.assert_states_equal(expected, models.loaded_state(str(tmp_path / "out"), dtype))
    changed = [k for k in expected if not torch.equal(expected[k], base_state.get(k, torch.empty(0)))]
    assert changed, "the adapter must change the model, or this test proves nothing"


@pytest.mark.parametrize(
    ("base_name", "dtype_flag", "dtype"), [("llama-bf16", "fp32", torch.float32), ("llama", "bf16", torch.bfloat16)]
)
def test_dtype_conversion_matches_peft_loaded_in_that_dtype(base_name, dtype_flag, dtype, bases, tmp_path) -> None:
    base = bases[base_name]
    adapter = models.save_adapter(base, str(tmp_path / "adapter"), **LLAMA_QV)
    merge(adapter, str(tmp_path / "out"), base=base, dtype=dtype_flag)
    stored = models.saved_tensors(str(tmp_path / "out"))
    assert {t.dtype for t in stored.values()} == {dtype}
    models.assert_states_equal(
        models.peft_merged_state(base, adapter, dtype), models.loaded_state(str(tmp_path / "out"), dtype)
    )


def test_sharded_base_gives_hf_sharded_output_with_index(bases, tmp_path) -> None:
    base = bases["llama-sharded"]
    adapter = models.save_adapter(base, str(tmp_path / "adapter"), **LLAMA_QV)
    out = tmp_path / "out"
    run_merge(ResolveRequest(adapter, base=base), str(out), quiet=True, max_shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(n for n in os.listdir(out) if n.endswith(".safetensors")) == shards
    stored = models.saved_tensors(str(out))
    assert set(index["weight_map"]) == set(stored)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in stored.values())


def test_untied_lm_head_is_written_and_config_unties(bases, tmp_path) -> None:
    adapter = models.save_adapter(
        bases["llama-tied"], str(tmp_path / "adapter"), **LLAMA_QV, modules_to_save=["lm_head"]
    )
    outcome = merge(adapter, str(tmp_path / "out"), base=bases["llama-tied"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert "lm_head.weight" in models.saved_tensors(str(tmp_path / "out"))
    assert any("untied" in note for note in outcome.result.plan.merge.notes)
