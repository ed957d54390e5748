"""Extended vocabularies, pickle on request, and the PEFT engine for adapter kinds the stream does not cover."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from packager.cli.main import main
from packager.demo import build_tokenizer
from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from tests import models

QV = {"target_modules": ["q_proj", "v_proj"]}


def test_extended_vocabulary_takes_adapter_rows_and_tokenizer(bases, tmp_path) -> None:
    """Chinese-LLaMA-Alpaca-2 style: the adapter resizes the vocabulary and ships its own tokenizer."""
    base = bases["llama"]
    adapter = models.save_adapter(
        base, str(tmp_path / "adapter"), resize_to=100, modules_to_save=["embed_tokens", "lm_head"], **QV
    )
    build_tokenizer(adapter)
    outcome = run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "out"), quiet=True)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 100
    assert (out / "tokenizer.json").read_bytes() == Path(adapter, "tokenizer.json").read_bytes()
    assert any("96 -> 100" in note and "adapter's tokenizer" in note for note in outcome.result.plan.merge.notes)
    assert outcome.parity.passed
    expected = models.peft_merged_state(base, adapter, torch.float32, resize_to=100)
    models.assert_states_equal(expected, models.loaded_state(str(out), torch.float32))


def test_extended_input_embeddings_without_output_rows_is_refused(bases, tmp_path, capsys) -> None:
    """PEFT saves lm_head too when the vocabulary grew; an adapter stripped of it cannot be merged faithfully."""
    from safetensors.torch import load_file, save_file

    adapter = models.save_adapter(
        bases["llama"], str(tmp_path / "adapter"), resize_to=100, modules_to_save=["embed_tokens"], **QV
    )
    path = os.path.join(adapter, "adapter_model.safetensors")
    save_file({k: v for k, v in load_file(path).items() if "lm_head" not in k}, path)
    code = main(["merge", "--adapter", adapter, "--base", bases["llama"], "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "lm_head" in err and "100" in err
    assert not (tmp_path / "out").exists()


def test_pickle_adapter_merges_with_allow_pickle(bases, tmp_path) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), safe_serialization=False, **QV)
    assert os.path.exists(os.path.join(adapter, "adapter_model.bin"))
    run_merge(ResolveRequest(adapter, base=bases["llama"], allow_pickle=True), str(tmp_path / "out"), quiet=True)
    expected = models.peft_merged_state(bases["llama"], adapter, torch.float32)
    models.assert_states_equal(expected, models.loaded_state(str(tmp_path / "out"), torch.float32))


def test_dora_falls_back_to_peft_engine_and_says_so(bases, tmp_path, capsys) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), use_dora=True, **QV)
    code = main(["merge", "--adapter", adapter, "--base", bases["llama"], "--output", str(tmp_path / "out"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["engine"] == "peft" and "DoRA" in report["engine_reason"]
    assert report["parity"]["passed"]
    expected = models.peft_merged_state(bases["llama"], adapter, torch.float32)
    models.assert_states_equal(expected, models.loaded_state(str(tmp_path / "out"), torch.float32))


def test_engine_stream_refused_for_dora(bases, tmp_path, capsys) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), use_dora=True, **QV)
    code = main(
        [
            "merge",
            "--adapter",
            adapter,
            "--base",
            bases["llama"],
            "--output",
            str(tmp_path / "out"),
            "--engine",
            "stream",
        ]
    )
    assert code == 2 and "--engine auto" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["stream", "peft"])
def test_both_engines_agree_on_plain_lora(engine, bases, tmp_path) -> None:
    adapter = models.save_adapter(
        bases["gpt2"], str(tmp_path / "adapter"), target_modules=["c_attn"], fan_in_fan_out=True
    )
    run_merge(ResolveRequest(adapter, base=bases["gpt2"], engine=engine), str(tmp_path / "out"), quiet=True)
    expected = models.peft_merged_state(bases["gpt2"], adapter, torch.float32)
    models.assert_states_equal(expected, models.loaded_state(str(tmp_path / "out"), torch.float32))


def test_parity_check_catches_a_wrong_merge(bases, tmp_path) -> None:
    """The parity check must be able to fail: corrupt one merged tensor and verify again."""
    from safetensors.torch import load_file, save_file

    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), **QV)
    out = tmp_path / "out"
    run_merge(ResolveRequest(adapter, base=bases["llama"]), str(out), quiet=True, verify=False)
    state = load_file(str(out / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.weight"] *= 1.5
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    code = main(["verify", "--adapter", adapter, "--base", bases["llama"], "--merged", str(out)])
    assert code == 1
