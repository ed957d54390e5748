"""The API key of packager's server, through the real `openai` client over real HTTP: 401 without it or with
another, answers with it; /health and /metrics stay open for probes and scraping."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from packager.runtime.api_key import API_KEY_ENV, api_key, authorized, vllm_env
from packager.runtime.config import parse_config
from packager.runtime.loading import load_engine
from packager.runtime.server import create_app
from tests.runtime.test_openai_client import serve_app

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def url(tiny) -> Iterator[str]:
    config = parse_config({"layout": "baked", "model_dir": tiny["base"], "served_name": "demo"})
    yield from serve_app(create_app(load_engine(config), KEY))


def test_the_openai_client_needs_the_key(url) -> None:
    for wrong in ("", "sk-another"):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=wrong or "unset", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.completions.create(model="demo", prompt="hello", max_tokens=2, temperature=0)
        assert caught.value.status_code == 401
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    answer = client.completions.create(model="demo", prompt="hello", max_tokens=2, temperature=0)
    assert answer.usage.completion_tokens == 2
    assert [m.id for m in client.models.list()] == ["demo"]


def test_probes_and_scraping_stay_open(url) -> None:
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert httpx.get(f"{url}/v1/models").status_code == 401


def test_the_key_comes_from_the_environment_and_reaches_vllm() -> None:
    assert api_key({}) is None and api_key({API_KEY_ENV: ""}) is None and api_key({API_KEY_ENV: KEY}) == KEY
    assert vllm_env({API_KEY_ENV: KEY}) == {"VLLM_API_KEY": KEY} and vllm_env({}) == {}
    assert authorized("/v1/models", f"Bearer {KEY}", KEY) and not authorized("/v1/models", f"Basic {KEY}", KEY)
    assert authorized("/v1/models", None, None), "no key set: open, as before"
