"""QLoRA adapters: w16 and simulate-nf4 merges against PEFT's own result for each mode, base resolution, errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import bitsandbytes
import pytest
import torch
from huggingface_hub import constants
from peft import PeftModel
from peft.utils.integrations import dequantize_bnb_weight
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from packager.cli.main import main
from packager.lock import plan_lock
from packager.merge.run import run_merge
from packager.merge.verify import RELATIVE_TOLERANCE, measure_parity
from packager.resolve.qlora import qlora_hint, sixteen_bit_name
from packager.resolve.resolver import ResolveRequest, resolve
from tests import models
from tests.cli.test_bad_inputs import assert_clean_failure, edit_config

QLORA = {"target_modules": ["q_proj", "v_proj", "down_proj"]}
DTYPES = {"llama": torch.float32, "llama-bf16": torch.bfloat16}
PREQUANTIZED = {
    "quant_method": "bitsandbytes",
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": False,
    "llm_int8_skip_modules": ["lm_head"],
}


@pytest.fixture(scope="module")
def adapters(bases, tmp_path_factory) -> dict[str, str]:
    """A LoRA adapter (non-zero B) per base, naming a pre-quantized base as QLoRA runs do."""
    root = tmp_path_factory.mktemp("qlora")
    made = {}
    for name in DTYPES:
        made[name] = models.save_adapter(bases[name], str(root / name), **QLORA)
        edit_config(made[name], base_model_name_or_path="acme/tiny-llama-bnb-4bit")
    return made


@pytest.fixture(scope="module")
def merged(bases, adapters, tmp_path_factory) -> dict[tuple[str, str], object]:
    """(base, mode) -> the outcome of merging that base's adapter in that mode."""
    root = tmp_path_factory.mktemp("merged")
    return {
        (name, mode): run_merge(
            ResolveRequest(adapters[name], base=bases[name], qlora_merge=mode), str(root / f"{name}-{mode}"), quiet=True
        )
        for name in DTYPES
        for mode in ("w16", "simulate-nf4")
    }


def peft_on_4bit(base: str, adapter: str, dtype: torch.dtype, double_quant: bool = True) -> PeftModel:
    """The QLoRA training setup: base loaded in 4-bit by bitsandbytes, adapter on top (unmerged)."""
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, quantization_config=config, device_map="cpu")
        return PeftModel.from_pretrained(model, adapter)


def four_bit_layers(model: PeftModel) -> dict[str, torch.nn.Module]:
    """Every bitsandbytes Linear4bit, by the name its weight has in a saved model."""
    return {
        name.removeprefix("base_model.model.").removesuffix(".base_layer"): module
        for name, module in model.named_modules()
        if isinstance(module, bitsandbytes.nn.Linear4bit)
    }


@pytest.mark.slow
@pytest.mark.parametrize("base_name", sorted(DTYPES))
def test_simulate_nf4_equals_peft_4bit_merge_arithmetic(base_name, bases, adapters, merged) -> None:
    """Targeted layers: PEFT's 4-bit merge before requantizing (dequantize + delta); others: the nf4 round trip."""
    dtype = DTYPES[base_name]
    outcome = merged[(base_name, "simulate-nf4")]
    stored = models.saved_tensors(outcome.output)
    reference = peft_on_4bit(bases[base_name], adapters[base_name], dtype)
    targeted = {name.removesuffix(".base_layer") for name, m in reference.named_modules() if hasattr(m, "lora_A")}
    checked = 0
    for name, layer in four_bit_layers(reference).items():
        weight = layer.weight
        expected = dequantize_bnb_weight(weight, state=weight.quant_state)
        lora = reference.get_submodule(f"base_model.model.{name}")
        if f"base_model.model.{name}" in targeted:
            expected = expected + lora.get_delta_weight("default")  # fp32 sum, as PEFT's merge forms it
            checked += 1
        models.assert_states_equal({name: expected.to(dtype)}, {name: stored[f"{name}.weight"]})
    assert checked == len(QLORA["target_modules"]) * 2
    base = models.saved_tensors(bases[base_name])
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(stored[name], base[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("base_name", sorted(DTYPES))
def test_simulate_nf4_parity_is_against_the_4bit_reference(base_name, merged) -> None:
    parity = merged[(base_name, "simulate-nf4")].parity
    assert parity.passed and "4-bit" in parity.reference and "nf4" in parity.reference
    assert parity.tolerance == RELATIVE_TOLERANCE[DTYPES[base_name]] * parity.max_abs_logit
    assert "4-bit" not in merged[(base_name, "w16")].parity.reference
    assert merged[(base_name, "w16")].parity.passed


@pytest.mark.slow
def test_verify_command_reports_the_4bit_reference(bases, adapters, merged, capsys) -> None:
    out = merged[("llama", "simulate-nf4")].output
    argv = ["verify", "--adapter", adapters["llama"], "--base", bases["llama"], "--merged", out]
    assert main([*argv, "--qlora-merge", "simulate-nf4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and "4-bit" in report["reference"] and report["max_abs_diff"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("base_name", sorted(DTYPES))
def test_w16_equals_the_plain_merge_and_peft(base_name, bases, adapters, merged, tmp_path) -> None:
    dtype = DTYPES[base_name]
    outcome = merged[(base_name, "w16")]
    plain = run_merge(ResolveRequest(adapters[base_name], base=bases[base_name]), str(tmp_path / "plain"), quiet=True)
    models.assert_states_equal(models.saved_tensors(plain.output), models.saved_tensors(outcome.output))
    expected = models.peft_merged_state(bases[base_name], adapters[base_name], dtype)
    models.assert_states_equal(expected, models.loaded_state(outcome.output, dtype))
    assert outcome.result.plan.merge.qlora.mode == "w16"
    assert not any(t.round_trip for t in outcome.result.plan.merge.tensors)


@pytest.mark.slow
def test_the_round_trip_happens_and_the_check_discriminates(bases, adapters, merged) -> None:
    """simulate-nf4 differs from w16 on every quantized weight, and w16 fails the nf4 parity bound."""
    w16 = models.saved_tensors(merged[("llama", "w16")].output)
    nf4 = models.saved_tensors(merged[("llama", "simulate-nf4")].output)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"):
        assert not torch.equal(w16[name], nf4[name]), name
    assert torch.equal(w16["lm_head.weight"], nf4["lm_head.weight"])
    resolved = resolve(
        ResolveRequest(adapters["llama"], base=bases["llama"], qlora_merge="simulate-nf4", hash_base=False)
    )
    wrong = measure_parity(resolved, merged[("llama", "w16")].output)
    assert not wrong.passed and wrong.max_abs_diff > 10 * wrong.tolerance, wrong.summary()


@pytest.mark.slow
def test_gpt2_conv1d_is_rounded_transposed_as_transformers_does(bases, tmp_path) -> None:
    base = bases["gpt2"]
    adapter = models.save_adapter(base, str(tmp_path / "a"), target_modules=["c_attn"], fan_in_fan_out=True)
    outcome = run_merge(
        ResolveRequest(adapter, base=base, qlora=True, qlora_merge="simulate-nf4"), str(tmp_path / "o"), quiet=True
    )
    assert outcome.parity.passed and "4-bit" in outcome.parity.reference
    stored = models.saved_tensors(outcome.output)
    reference = peft_on_4bit(base, adapter, torch.float32)
    layer = four_bit_layers(reference)["transformer.h.0.mlp.c_fc"]
    expected = dequantize_bnb_weight(layer.weight, state=layer.weight.quant_state).T  # stored as Conv1D [in, out]
    assert torch.equal(stored["transformer.h.0.mlp.c_fc.weight"], expected)


def _cached_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repos: dict[str, str]) -> None:
    for repo_id, source in repos.items():
        models.fake_hf_cache(tmp_path / "hf", repo_id, source)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.mark.slow
def test_prequantized_base_name_resolves_to_its_16bit_original(bases, adapters, tmp_path, monkeypatch) -> None:
    _cached_repo(tmp_path, monkeypatch, {"acme/tiny-llama": bases["llama"]})
    plan = resolve(ResolveRequest(adapters["llama"], hash_base=False)).plan
    assert plan.base.repo_id == "acme/tiny-llama" and plan.base.source == "hf-cache"
    assert plan.merge.qlora.mode == "w16" and "bnb-4bit" in plan.merge.qlora.reason
    notes = " | ".join(plan.merge.notes)
    assert "acme/tiny-llama-bnb-4bit is a pre-quantized 4-bit checkpoint" in notes
    assert "its 16-bit original acme/tiny-llama" in notes and "--qlora-merge simulate-nf4" in notes


@pytest.mark.slow
def test_settings_are_read_from_the_prequantized_config(bases, adapters, tmp_path, monkeypatch) -> None:
    quantized = tmp_path / "quantized"
    quantized.mkdir()
    config = json.loads(Path(bases["llama"], "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": PREQUANTIZED}))
    _cached_repo(tmp_path, monkeypatch, {"acme/tiny-llama": bases["llama"], "acme/tiny-llama-bnb-4bit": str(quantized)})
    lock = tmp_path / "lock.json"
    code = main(["resolve", "--adapter", adapters["llama"], "--qlora-merge", "simulate-nf4", "--lock", str(lock)])
    assert code == 0
    qlora = json.loads(lock.read_text())["merge"]["qlora"]
    assert qlora["mode"] == "simulate-nf4" and qlora["quant_type"] == "nf4" and qlora["blocksize"] == 64
    assert qlora["double_quant"] is False and qlora["skip_modules"] == ["lm_head"]
    assert "4-bit checkpoint" in qlora["reason"] and "acme/tiny-llama-bnb-4bit" in qlora["settings_from"]


@pytest.mark.slow
def test_lock_records_the_default_spec(bases, adapters, tmp_path, capsys) -> None:
    lock = tmp_path / "lock.json"
    argv = ["resolve", "--adapter", adapters["llama"], "--base", bases["llama"], "--lock", str(lock)]
    assert main([*argv, "--qlora-merge", "simulate-nf4"]) == 0
    qlora = json.loads(lock.read_text())["merge"]["qlora"]
    assert (qlora["quant_type"], qlora["blocksize"], qlora["double_quant"]) == ("nf4", 64, True)
    assert qlora["settings_from"] == "QLoRA defaults" and "assumed QLoRA's" in capsys.readouterr().out


@pytest.mark.slow
def test_16bit_original_not_found(adapters, tmp_path, capsys, monkeypatch) -> None:
    _cached_repo(tmp_path, monkeypatch, {})
    code = main(["merge", "--adapter", adapters["llama"], "--output", str(tmp_path / "out"), "--quiet"])
    assert_clean_failure(code, capsys.readouterr().err, tmp_path, "pre-quantized 4-bit", "acme/tiny-llama", "--base")


@pytest.mark.slow
def test_base_flag_on_a_prequantized_folder_is_refused(bases, adapters, tmp_path, capsys) -> None:
    packed = tmp_path / "packed"
    shutil.copytree(bases["llama"], packed)
    config = json.loads((packed / "config.json").read_text())
    (packed / "config.json").write_text(json.dumps({**config, "quantization_config": PREQUANTIZED}))
    argv = ["merge", "--adapter", adapters["llama"], "--base", str(packed), "--output", str(tmp_path / "out")]
    code = main([*argv, "--quiet"])
    assert_clean_failure(code, capsys.readouterr().err, tmp_path, "pre-quantized", "16-bit original", "--base")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--qlora-merge", "simulate-nf4", "--engine", "peft"], ("simulate-nf4", "--qlora-merge w16")),
        (["--qlora-merge", "nf8"], ("--qlora-merge", "invalid choice")),
    ],
)
def test_bad_combinations(flags, needles, bases, adapters, tmp_path, capsys) -> None:
    argv = ["merge", "--adapter", adapters["llama"], "--base", bases["llama"], "--output", str(tmp_path / "out")]
    code = main([*argv, "--quiet", *flags])
    assert_clean_failure(code, capsys.readouterr().err, tmp_path, *needles)


@pytest.mark.slow
def test_ordinary_adapters_have_no_spec_unless_asked(bases, tmp_path) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "a"), target_modules=["q_proj"])
    plain = resolve(ResolveRequest(adapter, base=bases["llama"], hash_base=False)).plan
    assert plain.merge.qlora is None and "qlora" not in plan_lock(plain)["merge"]
    asked = resolve(ResolveRequest(adapter, base=bases["llama"], hash_base=False, qlora_merge="simulate-nf4")).plan
    assert asked.merge.qlora.mode == "simulate-nf4" and "does not look QLoRA-trained" in asked.merge.notes[0]
    declared = resolve(ResolveRequest(adapter, base=bases["llama"], hash_base=False, qlora=True)).plan
    assert (declared.merge.qlora.mode, declared.merge.qlora.reason) == ("w16", "declared with --qlora")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unsloth/llama-3-8b-Instruct-bnb-4bit", "unsloth/llama-3-8b-Instruct"),
        ("unsloth/Meta-Llama-3.1-8B-Instruct-unsloth-bnb-4bit", "unsloth/Meta-Llama-3.1-8B-Instruct"),
        ("org/model-4bit", "org/model"),
        ("org/model-bnb-nf4", "org/model"),
        ("/models/llama_4bit", "/models/llama"),
        ("meta-llama/Llama-2-7b-hf", None),
    ],
)
def test_sixteen_bit_name(name: str, expected: str | None) -> None:
    assert sixteen_bit_name(name) == expected


def test_qlora_hint() -> None:
    assert "bnb-4bit" in qlora_hint({"base_model_name_or_path": "unsloth/mistral-7b-bnb-4bit"}, None)
    assert qlora_hint({"base_model_name_or_path": "meta-llama/Llama-2-7b-hf"}, None) is None
    prequantized = {"quantization_config": {"_load_in_4bit": True, "quant_method": "bitsandbytes"}}
    assert "4-bit checkpoint" in qlora_hint({"base_model_name_or_path": "my/base"}, prequantized)
    eight_bit = {"quantization_config": {"load_in_8bit": True, "quant_method": "bitsandbytes"}}
    assert qlora_hint({"base_model_name_or_path": "my/base"}, eight_bit) is None
