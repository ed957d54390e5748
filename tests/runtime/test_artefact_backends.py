"""The runtime serves quantized (compressed-tensors, through transformers) and ONNX artefacts with the same API,
answering exactly like those artefacts generate on the host; GPU-only load-time quantization refuses to start
without a GPU (exit 4).

The GPU paths (bnb-nf4, bnb-int8, fp8 on CUDA) cannot run on these machines: only their refusal and the
configuration objects they build are tested here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from packager.artefact.spec import artefact_spec
from packager.runtime.checkpoints import HardwareMissing, load_time_config
from packager.runtime.config import ConfigError, load_config, parse_config
from packager.runtime.loading import load_engine
from packager.runtime.server import create_app, main

pytestmark = pytest.mark.slow
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def artefacts(tiny: dict[str, str], tmp_path_factory) -> dict[str, str]:
    from packager.artefact.make import make_artefact
    from packager.artefact.onnx_export import export_onnx

    root, quiet = tmp_path_factory.mktemp("artefacts"), (lambda _: None)
    w8a8 = make_artefact(tiny["merged"], artefact_spec("w8a8"), str(root / "w8a8"), False, quiet, verify=False)
    return {
        "transformers": w8a8.path,
        "onnx": export_onnx(tiny["merged"], artefact_spec("int8", "onnx"), str(root / "onnx"), log=quiet).path,
    }


def _host_model(backend: str, folder: str):
    if backend == "onnx":
        from optimum.onnxruntime import ORTModelForCausalLM

        return ORTModelForCausalLM.from_pretrained(folder)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)  # a compressed-tensors checkpoint, as transformers loads it


@pytest.mark.parametrize("backend", ["transformers", "onnx"])
def test_api_answers_like_the_artefact_on_the_host(artefacts, backend, tmp_path: Path) -> None:
    folder = artefacts[backend]
    config = tmp_path / "runtime.json"
    config.write_text(json.dumps({"layout": "baked", "model_dir": folder, "served_name": "m", "backend": backend}))
    client = TestClient(create_app(load_engine(load_config(str(config), env={}))))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        out = _host_model(backend, folder).generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False
        )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    body = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0}).json()
    assert expected and body["choices"][0]["text"] == expected


@pytest.mark.parametrize("scheme", ["bnb-nf4", "bnb-int8", "fp8"])
def test_load_time_quantization_needs_a_gpu(scheme, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HardwareMissing, match=f"{scheme} quantizes on a CUDA GPU"):
        load_time_config(scheme)


def test_load_time_configs_are_what_transformers_expects(monkeypatch) -> None:
    """Mock: pretend a GPU is present, to check the configuration objects only (nothing is loaded)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    nf4 = load_time_config("bnb-nf4")
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4"
    assert load_time_config("bnb-int8").load_in_8bit
    assert type(load_time_config("fp8")).__name__ == "FineGrainedFP8Config"


def test_server_exits_4_without_a_gpu(tiny: dict[str, str], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine that has a GPU
    config = tmp_path / "runtime.json"
    data = {"layout": "baked", "model_dir": tiny["merged"], "served_name": "m", "load_quantization": "bnb-nf4"}
    config.write_text(json.dumps(data))
    assert main(["--config", str(config)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: load_quantization bnb-nf4") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"backend": "tensorrt"}, "backend must be one of"),
        ({"load_quantization": "gptq"}, "load_quantization must be one of"),
        ({"backend": "onnx", "load_quantization": "bnb-nf4"}, "not onnx"),
    ],
)
def test_config_rejects_unknown_backends(data, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({"layout": "baked", "model_dir": "/m", "served_name": "m", **data})


def test_load_time_bnb_needs_bitsandbytes_in_the_image(monkeypatch) -> None:
    """Mock: a GPU is pretended and bitsandbytes hidden, as in a GPU image built without it."""
    import importlib.util

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(HardwareMissing, match="needs bitsandbytes"):
        load_time_config("bnb-int8")
    assert type(load_time_config("fp8")).__name__ == "FineGrainedFP8Config"  # fp8 does not need it
