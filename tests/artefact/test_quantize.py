"""int8/int4 weight-only artefacts (optimum-quanto) on a real tiny model: written atomically, reloadable, and
measured: the figures come from the artefact on disk, and int4 costs more accuracy than int8."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from packager.artefact.accuracy import measure_accuracy
from packager.artefact.quantize import load_merged, load_quantized, quantize_merged
from packager.artefact.spec import ARTEFACT_REPORT
from packager.errors import OutputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artefacts(demo_merged, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("artefacts")
    return {s: quantize_merged(demo_merged, s, str(root / s), log=lambda _: None) for s in ("int8", "int4")}


def test_artefact_is_smaller_and_reloads_with_quantized_layers(artefacts) -> None:
    for scheme, report in artefacts.items():
        assert report.size_bytes < report.reference_size_bytes
        model = load_quantized(report.path)
        assert "QLinear" in type(model.model.layers[0].self_attn.q_proj).__name__
        assert type(model.lm_head).__name__ == "Linear"  # the output projection stays full precision
        assert json.loads(Path(report.path, ARTEFACT_REPORT).read_text())["kind"] == f"quanto-{scheme}"


def test_figures_are_measured_on_the_artefact_and_int4_costs_more(demo_merged, artefacts) -> None:
    int8, int4 = artefacts["int8"].accuracy, artefacts["int4"].accuracy
    assert 0 < int8.max_abs_logit_diff < int4.max_abs_logit_diff
    assert int8.mean_abs_logit_diff < int4.mean_abs_logit_diff
    assert int8.top1_agreement > int4.top1_agreement
    model, tokenizer = load_merged(demo_merged)
    again = measure_accuracy(model, load_quantized(artefacts["int8"].path), tokenizer.encode)
    assert again.max_abs_logit_diff == pytest.approx(int8.max_abs_logit_diff, rel=1e-5)


def test_quantized_model_generates(artefacts, demo_merged) -> None:
    _, tokenizer = load_merged(demo_merged)
    model = load_quantized(artefacts["int8"].path)
    ids = torch.tensor([tokenizer.encode("hello")])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


def test_existing_output_is_refused_and_kept(demo_merged, tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        quantize_merged(demo_merged, "int8", str(target), log=lambda _: None)
    assert os.listdir(target) == ["keep"]


def test_failure_leaves_nothing(demo_merged, tmp_path, monkeypatch) -> None:
    import packager.artefact.quantize as quantize

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(quantize, "copy_side_files", broken)
    with pytest.raises(RuntimeError):
        quantize_merged(demo_merged, "int8", str(tmp_path / "out"), log=lambda _: None)
    assert os.listdir(tmp_path) == []


def test_quantize_command_prints_the_json_report(demo_merged, tmp_path, capsys) -> None:
    from packager.cli.main import main

    out = tmp_path / "int8"
    assert (
        main(["--quiet", "quantize", "--model", demo_merged, "--output", str(out), "--quantize", "int8", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "quanto-int8" and report["path"] == str(out) and report["size_ratio"] < 1
    assert set(report["accuracy"]) >= {"top1_agreement", "greedy_token_agreement", "perplexity_change"}


def test_quantize_command_with_nothing_to_do_is_one_line(demo_merged, tmp_path, capsys) -> None:
    from packager.cli.main import main

    assert main(["quantize", "--model", demo_merged, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to do") and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_merge_with_quantize_writes_the_merge_and_the_artefact(tmp_path, capsys) -> None:
    from packager.cli.main import main
    from packager.demo import build_demo

    _, adapter = build_demo(str(tmp_path / "demo"))
    out = tmp_path / "merged"
    argv = ["--quiet", "merge", "--adapter", adapter, "--output", str(out), "--quantize", "int8", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["passed"] and report["artefact"]["kind"] == "quanto-int8"
    assert report["artefact"]["path"] == f"{out}-int8" and Path(f"{out}-int8", "quanto_qmap.json").is_file()
    assert Path(out, "config.json").is_file()


def test_load_time_schemes_have_nothing_to_write(demo_merged, tmp_path, capsys) -> None:
    from packager.cli.main import main

    assert main(["quantize", "--model", demo_merged, "--output", str(tmp_path / "o"), "--quantize", "bnb-nf4"]) == 2
    err = capsys.readouterr().err
    assert "use it with `packager package --quantize bnb-nf4`" in err and err.count("\n") == 1


def test_merge_refuses_an_existing_artefact_output_before_merging(tmp_path, capsys) -> None:
    from packager.cli.main import main
    from packager.demo import build_demo

    _, adapter = build_demo(str(tmp_path / "demo"))
    (tmp_path / "merged-onnx-int8").mkdir()
    argv = [
        "merge",
        "--adapter",
        adapter,
        "--output",
        str(tmp_path / "merged"),
        "--export",
        "onnx",
        "--quantize",
        "int8",
    ]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "merged").exists()
