"""Prompt-learning adapters served unmerged: the server answers as PEFT's own model does, baked (base and adapter
in one folder pair) and shared (several adapters on one base, chosen by `model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from peft import AdaptionPromptConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from packager.runtime.config import load_config
from packager.runtime.loading import load_engine
from packager.runtime.server import create_app
from tests import families

PROMPT = "The quick brown fox"
N = 8
CONFIGS = {
    "prompt": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6),
    "prompt-2": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "prefix": lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6),
    "p-tuning": lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, encoder_hidden_size=16),
    "adaption": lambda: AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=4, adapter_layers=1),
}


@pytest.fixture(scope="module")
def adapters(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("prompt-learning")
    saved = {
        name: families.save_task_adapter(tiny["base"], str(root / name), "CAUSAL_LM", make(), seed=i + 3)
        for i, (name, make) in enumerate(CONFIGS.items())
    }
    _open_gates(saved["adaption"])
    return saved


def _open_gates(adapter: str) -> None:
    """LLaMA-Adapter's gates start at zero, so a barely trained one answers as the base: open them wide."""
    from safetensors.torch import load_file, save_file

    path = f"{adapter}/adapter_model.safetensors"
    state = load_file(path)
    save_file({k: v * 100 if "adaption_gate" in k else v for k, v in state.items()}, path)


def _peft_greedy(base: str, adapter: str | None) -> str:
    """PEFT's own greedy completion (the base's alone without `adapter`): what the server must answer."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    model = PeftModel.from_pretrained(model, adapter).eval() if adapter else model
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=N)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _client(tmp_path: Path, data: dict) -> TestClient:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    return TestClient(create_app(load_engine(load_config(str(path), env={}))))


def _complete(client: TestClient, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": N, "temperature": 0}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


@pytest.mark.parametrize("name", ["prompt", "prefix", "p-tuning", "adaption"])
def test_baked_serves_the_adapter_unmerged_like_peft(tiny, adapters, name, tmp_path) -> None:
    data = {"layout": "baked", "model_dir": tiny["base"], "served_name": name, "adapter_dir": adapters[name]}
    client = _client(tmp_path, data)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [name]
    expected = _peft_greedy(tiny["base"], adapters[name])
    assert expected != _peft_greedy(tiny["base"], None), "the adapter must change the answer, or this proves nothing"
    assert _complete(client, name) == expected


def test_shared_serves_several_prompt_tuning_adapters_each_like_peft(tiny, adapters, tmp_path) -> None:
    served = {"one": adapters["prompt"], "two": adapters["prompt-2"]}
    data = {"layout": "shared", "base_dir": tiny["base"], "adapters": served, "lock": tiny["lock"]}
    client = _client(tmp_path, data)
    expected = {name: _peft_greedy(tiny["base"], path) for name, path in served.items()}
    assert expected["one"] != expected["two"], "the adapters must differ, or this test proves nothing"
    assert {name: _complete(client, name) for name in ("one", "two")} == expected
    assert _complete(client, "one") == expected["one"]  # switching back restores the first adapter's prompt


def test_an_adapter_dir_with_the_onnx_backend_is_refused(tmp_path) -> None:
    from packager.runtime.config import ConfigError, parse_config

    data = {"layout": "baked", "model_dir": "m", "served_name": "x", "backend": "onnx", "adapter_dir": "a"}
    with pytest.raises(ConfigError, match="adapter_dir are for the PyTorch backend"):
        parse_config(data, str(tmp_path))
