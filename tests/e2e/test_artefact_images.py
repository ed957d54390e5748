"""End to end through the Makefile: `make package ADAPTER=… EXPORT=onnx QUANT=int8` builds an image that starts on
the real engine and answers the API exactly like the int8 ONNX artefact generates on the host, with the accuracy
report in the JSON report, the lock and an image label (quantized vLLM images: test_quantized_images.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.e2e import containers

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "Question: what does packager do?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> str:
    from packager.demo import build_adapter, build_base

    root = tmp_path_factory.mktemp("artefact-demo")
    base = build_base(str(root / "base"), seed=0, hidden_size=128)
    return build_adapter(base, str(root / "support"), seed=3, r=16)


def _make_package(adapter: str, work: str, report: str, tag: str, runtime_image: str, **make_vars: str) -> None:
    variables = [
        f"{k}={v}"
        for k, v in {
            "ADAPTER": adapter,
            "WORK": work,
            "REPORT": report,
            "TAG": tag,
            "BASE_IMAGE": runtime_image,
            "BUILDER": "docker",
            **make_vars,
        }.items()
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["make", "-s", "package", *variables], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy: perplexity" in done.stdout  # the people's summary shows the figures


def _host_greedy(backend: str, folder: str, n: int) -> str:
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    model = ORTModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize(
    ("make_vars", "backend", "kind"),
    [({"QUANT": "int8", "EXPORT": "onnx"}, "onnx", "onnx-int8")],
    ids=["onnx-int8"],
)
def test_quantized_image_starts_and_answers(
    adapter, runtime_image, docker_client, tmp_path, make_vars, backend, kind
) -> None:
    tag = f"packager-test/{kind}:1"
    report_path = str(tmp_path / "report.json")
    _make_package(adapter, str(tmp_path / "work"), report_path, tag, runtime_image, **make_vars)
    report = json.loads(Path(report_path).read_text())
    artefact = report["artefact"]
    assert artefact["kind"] == kind and artefact["size_bytes"] < artefact["reference_size_bytes"]
    assert artefact["accuracy"]["max_abs_logit_diff"] > 0 and 0 < artefact["accuracy"]["top1_agreement"] <= 1
    labels = docker_client.images.get(tag).labels
    assert labels["io.packager.backend"] == backend
    assert json.loads(labels["io.packager.accuracy"])["kind"] == kind
    assert json.loads(Path(report["lock"]).read_text())["artefact"]["accuracy"] == artefact["accuracy"]

    expected = _host_greedy(backend, str(tmp_path / "work" / "artefact"), 12)
    container = containers.start(docker_client, tag)
    try:
        containers.wait_healthy(container)
        body = {"model": "support", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
        answer = containers.call(container, "/v1/completions", body)
        assert expected and answer["choices"][0]["text"] == expected
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


def test_make_package_refuses_a_bad_combination_in_one_line(adapter, engine, tmp_path) -> None:
    done = subprocess.run(
        [
            "make",
            "-s",
            "package",
            f"ADAPTER={adapter}",
            "QUANT=int4",
            "EXPORT=onnx",
            "BASE_IMAGE=x:1",
            f"WORK={tmp_path / 'work'}",
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "error: --quantize int4 (optimum-quanto) is gone" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "work").exists()
