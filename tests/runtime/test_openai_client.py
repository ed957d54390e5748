"""packager's own server through the real `openai` client over real HTTP (uvicorn on 127.0.0.1): completions,
chat, streaming equal to the unstreamed text, over-long requests refused as vLLM does, and /metrics."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer

from packager.runtime import checkpoints
from packager.runtime.config import load_config
from packager.runtime.loading import load_engine
from packager.runtime.server import create_app
from tests.runtime.test_server import PROMPT, _host_greedy

MESSAGES = [{"role": "user", "content": "Say something about foxes."}]


def _serve(tmp_path: Path, data: dict) -> Iterator[str]:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    yield from serve_app(create_app(load_engine(load_config(str(path), env={}))))


def serve_app(app) -> Iterator[str]:
    """`app` on uvicorn at 127.0.0.1 on a free port, in a thread; yields its URL, stops it after."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def baked_url(tiny, tmp_path_factory) -> Iterator[str]:
    data = {"layout": "baked", "model_dir": tiny["merged"], "served_name": "my-adapter"}
    yield from _serve(tmp_path_factory.mktemp("baked-http"), data)


@pytest.fixture(scope="module")
def shared_url(tiny, tmp_path_factory) -> Iterator[str]:
    adapters = {"alpha": tiny["adapter_a"], "beta": tiny["adapter_b"]}
    data = {"layout": "shared", "base_dir": tiny["base"], "adapters": adapters, "lock": tiny["lock"]}
    yield from _serve(tmp_path_factory.mktemp("shared-http"), data)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def test_completion_through_the_openai_client_matches_transformers(baked_url, tiny) -> None:
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny["merged"]),
        AutoTokenizer.from_pretrained(tiny["merged"]),
    )
    expected, _ = _host_greedy(model, tokenizer, tokenizer(PROMPT)["input_ids"], 12)
    answer = _client(baked_url).completions.create(model="my-adapter", prompt=PROMPT, max_tokens=12, temperature=0)
    assert expected and answer.choices[0].text == expected


@pytest.mark.parametrize("stop", [None, [" the", "."]])
def test_streamed_completion_equals_the_unstreamed_text(baked_url, stop) -> None:
    client = _client(baked_url)
    kwargs = {"model": "my-adapter", "prompt": PROMPT, "max_tokens": 24, "temperature": 0, "stop": stop}
    whole = client.completions.create(**kwargs).choices[0]
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.text and whole.text
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1]) and len(chunks) > 2


def test_streamed_chat_equals_the_unstreamed_chat(baked_url) -> None:
    client = _client(baked_url)
    kwargs = {"model": "my-adapter", "messages": MESSAGES, "max_tokens": 20, "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole and whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_shared_server_streams_each_adapter(shared_url) -> None:
    client = _client(shared_url)
    texts = {}
    for name in ("alpha", "beta"):
        kwargs = {"model": name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
        texts[name] = client.completions.create(**kwargs).choices[0].text
        streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True))
        assert streamed == texts[name]
    assert texts["alpha"] != texts["beta"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_longer_than_the_context_is_refused_with_400(baked_url, stream) -> None:
    client = _client(baked_url)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 128 tokens"):
        client.completions.create(model="my-adapter", prompt=PROMPT, max_tokens=200, stream=stream)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="my-adapter", messages=MESSAGES, max_tokens=500, stream=stream)


def test_a_client_that_leaves_mid_stream_does_not_block_the_next_request(baked_url) -> None:
    """The stream is closed when the client leaves, not when the garbage collector finds it (it may never: the
    cancelled response sits in a reference cycle), so the engine is free for the next request at once."""
    body = {"model": "my-adapter", "prompt": PROMPT, "max_tokens": 100, "temperature": 0, "stream": True}
    gc.disable()
    try:
        with httpx.stream("POST", f"{baked_url}/v1/completions", json=body, timeout=60) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ")
        client = openai.OpenAI(base_url=f"{baked_url}/v1", api_key="not-needed", max_retries=0, timeout=20)
        answer = client.completions.create(model="my-adapter", prompt="x", max_tokens=2, temperature=0)
    finally:
        gc.enable()
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_metrics_count_requests_and_tokens(baked_url) -> None:
    before = httpx.get(f"{baked_url}/metrics").text
    _client(baked_url).completions.create(model="my-adapter", prompt=PROMPT, max_tokens=5, temperature=0)
    after = httpx.get(f"{baked_url}/metrics").text

    def value(text: str, metric: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(metric))

    assert value(after, "packager:generation_tokens_total") > value(before, "packager:generation_tokens_total")
    assert value(after, 'packager:requests_total{endpoint="/v1/completions",status="200"}') >= 1
    assert "# TYPE packager:num_requests_running gauge" in after


def test_the_model_goes_to_the_gpu_when_one_is_visible(monkeypatch) -> None:
    """No GPU on these machines: torch's CUDA check is faked and the move is recorded, not performed."""
    moved = []

    class Model:
        def to(self, device):
            moved.append(device)
            return self

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert isinstance(checkpoints.on_gpu_if_visible(Model()), Model) and moved == ["cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    checkpoints.on_gpu_if_visible(Model())
    assert moved == ["cuda"]


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello wor", (), "hello wor"),
        ("hello wor\ufffd", (), "hello wor"),  # half a character: wait for the rest
        ("a\ufffdb c", (), "a\ufffdb c"),  # a byte that never decodes: it does not hold the rest back
        ("one. two", (".",), "one"),  # a stop string: never past it
        ("one tw", ("two",), "one "),  # could still become the stop string: held back
        ("one tx", ("two",), "one tx"),
    ],
)
def test_safe_prefix_sends_only_text_that_cannot_change(text, stops, expected) -> None:
    from packager.runtime.streaming import safe_prefix

    assert safe_prefix(text, stops) == expected
