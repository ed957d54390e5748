"""The merge planner alone: adapter tensors and base headers in, per-tensor plan out (no weights read)."""

from __future__ import annotations

import pytest

from packager.architecture.fingerprint import Fingerprint
from packager.architecture.inspect import Architecture
from packager.architecture.weights import BaseWeights
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.formats.adapter import Adapter, AdapterTensor
from packager.io.safetensors_format import TensorInfo
from packager.resolve.merge_plan import plan_merge

Q, V, EMBED = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.embed_tokens"


def _arch(tied: bool = False) -> Architecture:
    fingerprint = Fingerprint(("LlamaForCausalLM",), "llama", 16, 1, 32, "float32", tied)
    kinds = {Q: "linear", V: "linear", EMBED: "embedding", "lm_head": "linear"}
    return Architecture(fingerprint, kinds, EMBED, "lm_head")


def _weights(tied: bool = False) -> BaseWeights:
    shapes = {f"{Q}.weight": (16, 16), f"{V}.weight": (8, 16), f"{EMBED}.weight": (32, 16)}
    if not tied:
        shapes["lm_head.weight"] = (32, 16)
    tensors = {name: TensorInfo(name, "F32", shape, 0, 0) for name, shape in shapes.items()}
    return BaseWeights(("model.safetensors",), "safetensors", tensors, dict.fromkeys(tensors, "model.safetensors"))


def _adapter(tensors: dict[str, tuple[int, ...]], **config) -> Adapter:
    settings = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **config}
    return Adapter(
        "/a",
        None,
        settings,
        "/a/adapter_model.safetensors",
        {k: AdapterTensor("F32", s) for k, s in tensors.items()},
        False,
    )


LORA_QV = {
    f"{Q}.lora_A.weight": (4, 16),
    f"{Q}.lora_B.weight": (16, 4),
    f"{V}.lora_A.weight": (4, 16),
    f"{V}.lora_B.weight": (8, 4),
}


def test_scaling_is_alpha_over_r_and_only_targets_change() -> None:
    plan = plan_merge(_adapter(LORA_QV), _arch(), _weights())
    changed = {t.name: t.deltas for t in plan.tensors if t.deltas}
    assert plan.engine == "stream" and set(changed) == {f"{Q}.weight", f"{V}.weight"}
    assert {d.scaling for deltas in changed.values() for d in deltas} == {2.0}
    assert plan.changed_tensors == 2 and len(plan.tensors) == 4


def test_rslora_and_rank_pattern_change_the_scaling() -> None:
    rslora = plan_merge(_adapter(LORA_QV, use_rslora=True), _arch(), _weights())
    assert {d.scaling for t in rslora.tensors for d in t.deltas} == {8 / 4**0.5}
    tensors = {**LORA_QV, f"{V}.lora_A.weight": (2, 16), f"{V}.lora_B.weight": (8, 2)}
    patterned = plan_merge(_adapter(tensors, rank_pattern={"v_proj": 2}), _arch(), _weights())
    by_name = {t.name: t.deltas[0].scaling for t in patterned.tensors if t.deltas}
    assert by_name == {f"{Q}.weight": 2.0, f"{V}.weight": 4.0}


def test_a_shape_that_does_not_fit_the_base_is_refused() -> None:
    tensors = {**LORA_QV, f"{V}.lora_B.weight": (12, 4)}
    with pytest.raises(IncompatibleAdapterError, match="do not fit the base weight"):
        plan_merge(_adapter(tensors), _arch(), _weights())


def test_lora_on_a_tied_lm_head_is_written_untied() -> None:
    tensors = {"lm_head.lora_A.weight": (4, 16), "lm_head.lora_B.weight": (32, 4)}
    plan = plan_merge(_adapter(tensors, target_modules=["lm_head"]), _arch(tied=True), _weights(tied=True))
    head = next(t for t in plan.tensors if t.name == "lm_head.weight")
    assert head.source == "base" and head.source_key == f"{EMBED}.weight" and head.deltas
    assert plan.config_updates["tie_word_embeddings"] is False


def test_a_larger_embedding_in_modules_to_save_extends_the_vocabulary() -> None:
    tensors = {**LORA_QV, f"{EMBED}.weight": (40, 16), "lm_head.weight": (40, 16)}
    plan = plan_merge(_adapter(tensors, modules_to_save=["embed_tokens", "lm_head"]), _arch(), _weights())
    assert plan.config_updates["vocab_size"] == 40 and any("vocabulary extended 32 -> 40" in n for n in plan.notes)


def test_unknown_dtype_and_engine_are_refused() -> None:
    with pytest.raises(UserInputError, match="--dtype"):
        plan_merge(_adapter(LORA_QV), _arch(), _weights(), dtype="int3")
    with pytest.raises(UserInputError, match="--engine"):
        plan_merge(_adapter(LORA_QV), _arch(), _weights(), engine="magic")


def test_dtype_choice_is_planned_for_every_tensor() -> None:
    plan = plan_merge(_adapter(LORA_QV), _arch(), _weights(), dtype="bf16")
    assert {t.dtype for t in plan.tensors} == {"BF16"} and plan.config_updates["torch_dtype"] == "bfloat16"
