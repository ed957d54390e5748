"""The batching server over real HTTP (uvicorn on 127.0.0.1, the `openai` client): a full queue answers 429 at
once, a client that leaves mid-stream frees its row while its batch goes on, 200 concurrent mixed requests each
get their own answer, and /metrics shows the queue, the batch sizes and the time to first token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from packager.runtime.batch_limits import BatchLimits
from packager.runtime.models import Engine, GenerationParams
from packager.runtime.server import create_app
from tests.runtime.serving import gated, load, wait_until
from tests.runtime.test_openai_client import serve_app

PROMPTS = ["The quick brown fox", "Hello", "a b c d e f", "packaging adapters for serving"]


def _shared(tiny: dict[str, str]) -> dict:
    adapters = {"alpha": tiny["adapter_a"], "beta": tiny["adapter_b"]}
    return {"layout": "shared", "base_dir": tiny["base"], "adapters": adapters, "lock": tiny["lock"]}


def _serve(engine: Engine) -> Iterator[str]:
    yield from serve_app(create_app(engine))


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def _metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.split()[0] == name)


def test_a_full_queue_answers_429_at_once(tiny, tmp_path: Path) -> None:
    engine = load(_shared(tiny), tmp_path, BatchLimits(max_batch_size=1, max_queue=1))
    engine.scheduler.net, gate = gated(engine.scheduler.net)
    body = {"model": "alpha", "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0}
    for url in _serve(engine):
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=60)
            wait_until(lambda: engine.scheduler.stats.batches == 1)  # in its first pass, held at the gate
            queued = pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=60)
            wait_until(lambda: engine.scheduler.stats.waiting == 1)
            assert _metric(url, "packager:num_requests_waiting") == 1
            refused = httpx.post(f"{url}/v1/completions", json={**body, "stream": True}, timeout=5)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "max_queue" in refused.json()["error"]["message"]
            with pytest.raises(openai.RateLimitError):
                _client(url).completions.create(model="alpha", prompt="x", max_tokens=2)
            gate.set()
            assert running.result().status_code == 200 and queued.result().status_code == 200


def test_a_client_that_leaves_mid_stream_frees_its_row_and_the_batch_goes_on(tiny, tmp_path: Path) -> None:
    engine, alone = load(_shared(tiny), tmp_path), load(_shared(tiny), tmp_path, BatchLimits(max_batch_size=1))
    expected = alone.generate("beta", alone.encode_prompt("beta", PROMPTS[1]), GenerationParams(60, temperature=0))
    net, gate = gated(engine.scheduler.net)
    engine.scheduler.net = net
    leaving = {"model": "alpha", "prompt": PROMPTS[0], "max_tokens": 100, "temperature": 0, "stream": True}
    staying = {"model": "beta", "prompt": PROMPTS[1], "max_tokens": 60, "temperature": 0}
    for url in _serve(engine):
        with ThreadPoolExecutor(1) as pool:
            with httpx.stream("POST", f"{url}/v1/completions", json=leaving, timeout=60) as response:
                wait_until(lambda: engine.scheduler.stats.batches == 1)
                kept = pool.submit(_client(url).completions.create, **staying)
                wait_until(lambda: engine.scheduler.stats.waiting == 1)
                gate.set()
                assert next(response.iter_lines()).startswith("data: ")
            answer = kept.result()
    assert answer.choices[0].text == expected.text and answer.usage.completion_tokens == 60
    wait_until(lambda: not engine.scheduler.rows)
    assert engine.scheduler.stats.batch_rows < 100 + 60, "the row of the client that left stopped early"


@pytest.fixture(scope="module")
def shared_url(tiny, tmp_path_factory) -> Iterator[str]:
    yield from _serve(load(_shared(tiny), tmp_path_factory.mktemp("batching-http")))


def test_200_concurrent_mixed_requests_each_get_their_own_answer(tiny, shared_url, tmp_path: Path) -> None:
    url = shared_url
    alone = load(_shared(tiny), tmp_path, BatchLimits(max_batch_size=1))
    requests = [(name, prompt, n) for name in ("alpha", "beta") for prompt in PROMPTS for n in (3, 9)]
    expected = {
        request: alone.generate(
            request[0], alone.encode_prompt(request[0], request[1]), GenerationParams(request[2], 0)
        )
        for request in requests
    }
    client = _client(url)

    def ask(i: int) -> tuple[tuple, str]:
        name, prompt, n = requests[i % len(requests)]
        if i % 3:
            answer = client.completions.create(model=name, prompt=prompt, max_tokens=n, temperature=0)
            return requests[i % len(requests)], answer.choices[0].text
        chunks = client.completions.create(model=name, prompt=prompt, max_tokens=n, temperature=0, stream=True)
        return requests[i % len(requests)], "".join(c.choices[0].text for c in chunks)

    before = (_metric(url, "packager:batch_size_sum"), _metric(url, "packager:batch_size_count"))
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(ask, range(200)))
    assert all(text == expected[request].text for request, text in answers)
    rows = _metric(url, "packager:batch_size_sum") - before[0]
    passes = _metric(url, "packager:batch_size_count") - before[1]
    assert rows / passes > 2, "concurrent requests share forward passes"
    assert _metric(url, "packager:time_to_first_token_seconds_count") >= 200


def test_requests_in_flight_are_counted_while_they_wait(tiny, tmp_path: Path) -> None:
    """The autoscaler reads packager:num_requests_running (issue 19): it counts queued requests as well."""
    engine = load(_shared(tiny), tmp_path, BatchLimits(max_batch_size=1))
    net, gate = gated(engine.scheduler.net)
    engine.scheduler.net = net
    body = {"model": "alpha", "prompt": PROMPTS[0], "max_tokens": 2}
    for url in _serve(engine):
        threads = [
            threading.Thread(target=httpx.post, args=(f"{url}/v1/completions",), kwargs={"json": body})
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: engine.scheduler.stats.waiting == 2)
        assert _metric(url, "packager:num_requests_running") >= 3
        gate.set()
        for thread in threads:
            thread.join()


def test_a_stream_reports_its_usage_when_asked(shared_url) -> None:
    """stream_options.include_usage, as OpenAI and vLLM answer it: a last chunk with no choices and the usage."""
    client = _client(shared_url)
    whole = client.completions.create(model="beta", prompt=PROMPTS[2], max_tokens=7, temperature=0)
    chunks = list(
        client.completions.create(
            model="beta", prompt=PROMPTS[2], max_tokens=7, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text
    plain = list(client.completions.create(model="beta", prompt=PROMPTS[2], max_tokens=7, temperature=0, stream=True))
    assert all(c.choices for c in plain) and plain[-1].usage is None
