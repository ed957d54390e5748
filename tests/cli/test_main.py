"""The command line as a user meets it: help, the demo, summaries and JSON reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from packager.cli.main import main


def test_help_explains_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for command in ("resolve", "merge", "verify", "package", "push", "demo"):
        assert command in out


def test_merge_help_lists_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--adapter",
        "--base",
        "--checkpoint",
        "--dtype",
        "--no-verify",
        "--allow-pickle",
        "--engine",
        "--dry-run",
    ):
        assert flag in out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("demo"))
    assert main(["demo", "--output", root]) == 0
    return root


def test_demo_merge_json_report(demo, tmp_path, capsys) -> None:
    capsys.readouterr()
    out = tmp_path / "merged"
    assert main(["merge", "--adapter", os.path.join(demo, "adapter"), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out) and report["engine"] == "stream"
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] <= report["parity"]["tolerance"]
    assert report["changed_tensors"] == 14  # 7 projections x 2 layers
    assert {f["path"] for f in report["files"]} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert os.path.isfile(report["lock"])


def test_demo_merge_summary_and_progress_lines(demo, tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packager.cli.main",
            "merge",
            "--adapter",
            os.path.join(demo, "adapter"),
            "--output",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "parity ok" in proc.stdout and "merge:   stream" in proc.stdout
    assert "merge: model.safetensors" in proc.stderr and "done in" in proc.stderr


def test_merged_demo_generates_text(demo, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "m"
    assert main(["merge", "--adapter", os.path.join(demo, "adapter"), "--output", str(out), "--quiet"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    ids = tokenizer("Hello world", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5


def test_package_flags_for_scaling_and_a_key_reach_the_plan(demo, tmp_path, capsys) -> None:
    capsys.readouterr()
    argv = ["package", "--adapter", f"sql={os.path.join(demo, 'adapter')}", "--layout", "shared", "--dry-run",
            "--json", "--work", str(tmp_path), "--replicas", "2:6", "--api-key-secret", "llm-key"]  # fmt: skip
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["deploy"]["replicas"] == 2 and plan["deploy"]["max_replicas"] == 6
    assert plan["deploy"]["api_key_secret"] == "llm-key" and plan["sizing"]["device"] == "cpu"
    assert main([*argv[:-4], "--replicas", "6:2"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err
    assert main([*argv[:-4], "--replicas", "two"]) == 2
    assert "is not N or MIN:MAX" in capsys.readouterr().err


def test_verify_of_a_quantized_merge_holds_it_to_the_accuracy_gate_not_to_exact_parity(tmp_path, capsys) -> None:
    """Issue 24: `verify` of a w8a8 merge printed `parity FAILED` and exited 1, saying nothing of the quantization."""
    from packager.demo import build_demo

    _base, adapter = build_demo(str(tmp_path / "demo"))
    merged = str(tmp_path / "merged")
    assert main(["merge", "--adapter", adapter, "--output", merged, "--quantize", "w8a8", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["verify", "--adapter", adapter, "--merged", merged]) == 0
    out = capsys.readouterr().out
    assert "quantized merge (w8a8, compressed-tensors)" in out and "not for exact logits parity" in out
    assert "accuracy ok (limits: perplexity at most +10%" in out
    assert main(["verify", "--adapter", adapter, "--merged", merged, "--max-kl", "1e-9"]) == 1
    assert "accuracy FAILED: it moved the next-token distributions by KL" in capsys.readouterr().out
