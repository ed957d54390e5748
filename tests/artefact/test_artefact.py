"""Which quantize/export combinations are accepted, what the runtime is told, and the report's shape."""

from __future__ import annotations

import json

import pytest

from packager.accuracy.logits import AccuracyReport
from packager.accuracy.report import ArtefactReport
from packager.artefact.spec import artefact_spec
from packager.cli.main import main
from packager.errors import UserInputError


@pytest.mark.parametrize(
    ("quantize", "export", "backend", "load", "label"),
    [
        ("none", "none", "transformers", "none", "none"),
        ("w8a8", "none", "transformers", "none", "w8a8"),
        ("w8a16", "none", "transformers", "none", "w8a16"),
        ("w4a16", "none", "transformers", "none", "w4a16"),
        ("fp8", "none", "transformers", "none", "fp8"),
        ("none", "onnx", "onnx", "none", "onnx-fp32"),
        ("int8", "onnx", "onnx", "none", "onnx-int8"),
        ("bnb-nf4", "none", "transformers", "bnb-nf4", "bnb-nf4"),
        ("fp8-load", "none", "transformers", "fp8", "fp8-load"),
    ],
)
def test_accepted_combinations(quantize, export, backend, load, label) -> None:
    spec = artefact_spec(quantize, export)
    assert (spec.backend, spec.load_quantization, spec.label) == (backend, load, label)
    assert spec.transforms == (backend != "transformers")
    assert spec.streamed == (quantize in ("w8a8", "w8a16", "w4a16", "fp8"))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"quantize": "int4", "export": "onnx"}, r"int4 \(optimum-quanto\) is gone.*use --quantize w4a16"),
        ({"quantize": "int8"}, r"int8 \(optimum-quanto\) is gone.*w8a16 \(int8 weights\) or w8a8.*stays for --export"),
        ({"quantize": "w8a8", "export": "onnx"}, "does not apply to ONNX.*--export onnx --quantize int8"),
        ({"quantize": "bnb-nf4", "export": "onnx"}, "does not apply to ONNX"),
        ({"quantize": "int3"}, "unknown --quantize 'int3'"),
        ({"export": "tflite"}, "unknown --export"),
        ({"export": "onnx", "layout": "shared"}, "use --layout baked"),
        ({"quantize": "w8a8", "granularity": "per-tensor"}, "applies to --export onnx --quantize int8"),
        ({"export": "onnx", "onnx_atol": 0.0}, "must be positive"),
        ({"quantize": "w8a8", "max_accuracy_loss": 0.0}, "--max-accuracy-loss must be positive"),
    ],
)
def test_refused_combinations_say_what_works(kwargs, words) -> None:
    with pytest.raises(UserInputError, match=words):
        artefact_spec(**kwargs)


def test_load_time_quantization_works_with_the_shared_layout() -> None:
    assert artefact_spec("bnb-int8", layout="shared").load_quantization == "bnb-int8"


def test_bad_combination_on_the_command_line_is_one_line_exit_2(tmp_path, capsys) -> None:
    code = main(
        [
            "package",
            "--adapter",
            str(tmp_path),
            "--layout",
            "baked",
            "--base-image",
            "x:1",
            "--quantize",
            "int4",
            "--export",
            "onnx",
            "--work",
            str(tmp_path / "work"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --quantize int4 (optimum-quanto) is gone") and err.count("\n") == 1
    assert not (tmp_path / "work").exists()


def test_unknown_scheme_on_the_command_line_is_exit_2(tmp_path, capsys) -> None:
    assert main(["quantize", "--model", str(tmp_path), "--output", str(tmp_path / "o"), "--quantize", "int2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_label_is_compact_json_of_computed_figures() -> None:
    accuracy = AccuracyReport(0.5, 0.01, 0.9, 0.02, 10.0, 11.0, greedy_token_agreement=0.8)
    report = ArtefactReport("onnx-int8", "/x", 250, 1000, 1.0, accuracy)
    label = json.loads(report.label())
    assert label == {
        "kind": "onnx-int8",
        "size_ratio": 0.25,
        "max_abs_logit_diff": 0.5,
        "mean_abs_logit_diff": 0.01,
        "top1": 0.9,
        "kl": 0.02,
        "greedy": 0.8,
        "ppl_change": 0.1,
    }
    assert report.to_dict()["accuracy"]["perplexity_change"] == pytest.approx(0.1)
    assert "0.25x the merge" in report.summary()
