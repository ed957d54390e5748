"""The HTTP API answers like transformers/PEFT generating directly on the host."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from packager.runtime.config import load_config
from packager.runtime.loading import load_engine
from packager.runtime.models import Engine
from packager.runtime.server import create_app

N = 8
PROMPT = "The quick brown fox"


def _host_greedy(model, tokenizer, ids: list[int], n: int = N) -> tuple[str, list[int]]:
    """Reference: transformers' own greedy generation."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids, do_sample=False, max_new_tokens=n)
    new = out[0, len(ids) :].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new


def _client(tmp_path: Path, data: dict) -> TestClient:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    return TestClient(create_app(load_engine(load_config(str(path), env={}))))


@pytest.fixture(scope="module")
def baked(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    data = {"layout": "baked", "model_dir": tiny["merged"], "served_name": "my-adapter"}
    return _client(tmp_path_factory.mktemp("baked"), data)


@pytest.fixture(scope="module")
def shared(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    adapters = {"alpha": tiny["adapter_a"], "beta": tiny["adapter_b"]}
    data = {"layout": "shared", "base_dir": tiny["base"], "adapters": adapters, "lock": tiny["lock"]}
    return _client(tmp_path_factory.mktemp("shared"), data)


@pytest.fixture(scope="module")
def host_merged(tiny: dict[str, str]):
    return AutoModelForCausalLM.from_pretrained(tiny["merged"]).eval(), AutoTokenizer.from_pretrained(tiny["merged"])


def test_baked_health_and_models(baked: TestClient) -> None:
    assert baked.get("/health").json() == {"status": "ok"}
    body = baked.get("/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["my-adapter"]


@pytest.mark.parametrize("model", ["my-adapter", None])
def test_baked_greedy_completion_matches_transformers(baked: TestClient, host_merged, model: str | None) -> None:
    host, tokenizer = host_merged
    ids = tokenizer(PROMPT)["input_ids"]
    expected, new = _host_greedy(host, tokenizer, ids)
    request = {"prompt": PROMPT, "max_tokens": N, "temperature": 0, **({"model": model} if model else {})}
    body = baked.post("/v1/completions", json=request).json()
    assert body["object"] == "text_completion" and body["model"] == "my-adapter"
    assert expected and body["choices"][0]["text"] == expected
    stopped = new[-1] == tokenizer.eos_token_id
    assert body["choices"][0]["finish_reason"] == ("stop" if stopped else "length")
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": len(new),
        "total_tokens": len(ids) + len(new),
    }


def test_stop_string_cuts_text(baked: TestClient, host_merged) -> None:
    host, tokenizer = host_merged
    full, _ = _host_greedy(host, tokenizer, tokenizer(PROMPT)["input_ids"])
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    body = baked.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": N, "temperature": 0, "stop": [stop]})
    choice = body.json()["choices"][0]
    assert choice["text"] == full[: full.index(stop)] and choice["finish_reason"] == "stop"


def test_sampling_is_reproducible_with_seed(baked: TestClient) -> None:
    request = {"prompt": PROMPT, "max_tokens": N, "temperature": 1.5, "top_p": 0.95, "seed": 7}
    texts = [baked.post("/v1/completions", json=request).json()["choices"][0]["text"] for _ in range(2)]
    assert texts[0] == texts[1]
    assert (
        baked.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}).json()["usage"]["completion_tokens"]
        <= 3
    )


def test_baked_chat_matches_template_generation(baked: TestClient, host_merged) -> None:
    host, tokenizer = host_merged
    messages = [{"role": "user", "content": "hello there"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected, _ = _host_greedy(host, tokenizer, ids)
    body = baked.post("/v1/chat/completions", json={"messages": messages, "max_tokens": N, "temperature": 0}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert body["usage"]["prompt_tokens"] == len(ids)


def test_chat_without_template_is_400(host_merged) -> None:
    host, tokenizer = host_merged
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    client = TestClient(create_app(Engine(host, {"plain": plain})))
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert "model 'plain' has no chat template" in response.json()["error"]["message"]


def test_errors_are_openai_style(baked: TestClient) -> None:
    response = baked.post("/v1/completions", json={"model": "x", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"message": "model 'x' not found; available: my-adapter", "type": "invalid_request_error"}
    }
    response = baked.post("/v1/completions", json={"max_tokens": 2})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("prompt:")


def test_shared_adapters_match_peft_and_differ(shared: TestClient, tiny: dict[str, str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny["base"])
    ids = tokenizer(PROMPT)["input_ids"]
    request = {"prompt": PROMPT, "max_tokens": N, "temperature": 0}
    served = {}
    for name, key in (("alpha", "adapter_a"), ("beta", "adapter_b"), ("alpha", "adapter_a")):
        body = shared.post("/v1/completions", json={**request, "model": name}).json()
        host = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["base"]), tiny[key]).eval()
        expected, _ = _host_greedy(host, tokenizer, ids)
        assert body["model"] == name and body["choices"][0]["text"] == expected
        served[name] = expected
    assert served["alpha"] != served["beta"]


def test_shared_models_and_unknown_adapter(shared: TestClient) -> None:
    assert [m["id"] for m in shared.get("/v1/models").json()["data"]] == ["alpha", "beta"]
    response = shared.post(
        "/v1/chat/completions", json={"model": "gamma", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "model 'gamma' not found; available: alpha, beta"
    assert shared.post("/v1/completions", json={"prompt": "x"}).status_code == 400


def test_a_text_model_refuses_image_parts(baked: TestClient) -> None:
    """Dropping the image and answering the text alone would be a wrong answer: refuse."""
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "what is this?"}]}]}
    answer = baked.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400 and "takes no images" in answer.json()["error"]["message"]
