"""ONNX export on a real tiny model: fp32 greedy output equals PyTorch's, int8 is smaller and measured with both
scale granularities, and a failed validation stops the export with nothing written."""

from __future__ import annotations

import os

import pytest
import torch

from packager.artefact.onnx_export import export_onnx, load_merged, load_ort
from packager.artefact.spec import artefact_spec
from packager.errors import ValidationError

pytestmark = pytest.mark.slow
quiet = {"log": lambda _: None}


@pytest.fixture(scope="module")
def fp32(demo_merged, tmp_path_factory):
    return export_onnx(demo_merged, artefact_spec("none", "onnx"), str(tmp_path_factory.mktemp("o") / "fp32"), **quiet)


@pytest.fixture(scope="module")
def int8(demo_merged, tmp_path_factory):
    return export_onnx(demo_merged, artefact_spec("int8", "onnx"), str(tmp_path_factory.mktemp("o") / "int8"), **quiet)


def test_fp32_greedy_generation_equals_pytorch(demo_merged, fp32) -> None:
    from optimum.onnxruntime import ORTModelForCausalLM

    model, tokenizer = load_merged(demo_merged, dtype="fp32")
    session = ORTModelForCausalLM.from_pretrained(fp32.path)
    for prompt in ("The adapter", "Shipping a model is"):
        ids = torch.tensor([tokenizer.encode(prompt)])
        kwargs = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 10, "do_sample": False}
        assert session.generate(input_ids=ids, **kwargs).tolist() == model.generate(input_ids=ids, **kwargs).tolist()
    assert fp32.accuracy.greedy_exact_prompts == 1.0 and fp32.accuracy.max_abs_logit_diff < 1e-4


def test_int8_is_smaller_and_both_granularities_are_measured(fp32, int8) -> None:
    assert int8.size_bytes < 0.6 * fp32.size_bytes  # a tiny model: graph overhead; the bench measures 1.1B
    assert int8.details["fp32_onnx_bytes"] == fp32.size_bytes
    candidates = int8.details["candidates"]
    assert set(candidates) == {"per-channel", "per-tensor"}
    chosen = candidates[int8.details["granularity"]]
    other = candidates[({"per-channel", "per-tensor"} - {int8.details["granularity"]}).pop()]
    assert 1 - chosen["top1_agreement"] <= 1 - other["top1_agreement"]
    assert int8.accuracy.max_abs_logit_diff > fp32.accuracy.max_abs_logit_diff  # computed, not copied
    assert not any(n.startswith(("fp32", "int8-")) for n in os.listdir(int8.path))  # candidates cleaned up


def test_int8_artefact_runs_in_onnxruntime(int8, demo_merged) -> None:
    _, tokenizer = load_merged(demo_merged)
    ids = torch.tensor([tokenizer.encode("hello there")])
    logits = load_ort(int8.path)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape[-1] == len(tokenizer) or logits.shape[-1] >= tokenizer.vocab_size


def test_explicit_granularity_measures_only_that_one(demo_merged, tmp_path) -> None:
    report = export_onnx(
        demo_merged, artefact_spec("int8", "onnx", granularity="per-tensor"), str(tmp_path / "o"), **quiet
    )
    assert report.details["granularity"] == "per-tensor" and list(report.details["candidates"]) == ["per-tensor"]


def test_failed_validation_stops_the_export_and_writes_nothing(demo_merged, tmp_path) -> None:
    with pytest.raises(ValidationError, match="does not match PyTorch"):
        export_onnx(demo_merged, artefact_spec("none", "onnx", onnx_atol=1e-12), str(tmp_path / "o"), **quiet)
    assert os.listdir(tmp_path) == []


def test_a_wrong_export_is_caught(demo_merged, tmp_path, monkeypatch) -> None:
    """The exporter writing a model that answers differently (here: damaged weights) must not pass."""
    import packager.artefact.onnx_export as onnx_export

    real_export = onnx_export._export

    def damaged_export(model, folder):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "mlp" in name:
                    param.mul_(1.5)
        real_export(model, folder)

    monkeypatch.setattr(onnx_export, "_export", damaged_export)
    with pytest.raises(ValidationError):
        export_onnx(demo_merged, artefact_spec("none", "onnx"), str(tmp_path / "o"), **quiet)
    assert os.listdir(tmp_path) == []


def test_an_architecture_optimum_cannot_export_is_refused_before_any_work(tmp_path, capsys) -> None:
    from packager.cli.main import main

    model = tmp_path / "mamba"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}')
    assert main(["quantize", "--model", str(model), "--output", str(tmp_path / "o"), "--export", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: optimum-onnx cannot export model type 'mamba'") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
