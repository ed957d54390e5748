"""Batched embeddings and classification: concurrent requests gathered into padded passes answer as each does
alone (cosine >= 0.99999 for embeddings, the same labels and probabilities for classifiers), for the PyTorch model
and its ONNX export alike, and the passes respect the row and padded-token limits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from packager.artefact.make import make_artefact
from packager.artefact.spec import artefact_spec
from packager.runtime.batch_limits import BatchLimits
from packager.runtime.gathering import Gatherer, Texts
from packager.runtime.loading import load_baked
from tests import families
from tests.runtime.serving import gated, wait_until

TEXTS = [
    "A short one.",
    "Packaging an adapter for serving is where most people get stuck, and batching is where servers get fast.",
    "Mid-length sentence about embeddings.",
    "Two words",
    "Sorting by length wastes little padding when many texts of different lengths arrive together at the server.",
    "x",
]


def _concurrently(engine, call, texts: list[list[str]]) -> list:
    """Each list of texts as its own request from its own thread, all queued behind one running pass."""
    engine.model, gate = gated(engine.model)
    with ThreadPoolExecutor(len(texts) + 1) as pool:
        first = pool.submit(call, "m", ["held at the gate"])
        wait_until(lambda: engine.scheduler.stats.batches == 0 and engine.scheduler.stats.running == 1)
        futures = [pool.submit(call, "m", t) for t in texts]
        wait_until(lambda: engine.scheduler.stats.waiting == len(texts))
        gate.set()
        first.result()
        return [f.result() for f in futures]


@pytest.fixture(scope="module")
def minilm_engines(tmp_path_factory) -> dict:
    """The real all-MiniLM-L6-v2 (sentence-transformers folder: mean pooling, normalized) and its fp32 ONNX."""
    onnx = make_artefact(
        families.minilm_base(),
        artefact_spec(export="onnx"),
        str(tmp_path_factory.mktemp("onnx") / "fp32"),
        False,
        log=print,
    )
    return {
        "pytorch": lambda: load_baked(families.minilm_base(), "m", task="FEATURE_EXTRACTION", model_class="AutoModel"),
        "onnx": lambda: load_baked(onnx.path, "m", "onnx", task="FEATURE_EXTRACTION", model_class="AutoModel"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_gathered_embeddings_equal_each_request_alone(minilm_engines, backend) -> None:
    engine = minilm_engines[backend]()
    requests = [[t] for t in TEXTS] + [TEXTS[:3], TEXTS[3:]]
    alone = [engine.embed("m", texts) for texts in requests]
    assert engine.scheduler.stats.batches == len(requests)
    engine = minilm_engines[backend]()
    gathered = _concurrently(engine, engine.embed, requests)
    stats = engine.scheduler.stats
    assert stats.batches == 2 and stats.batch_rows == 1 + sum(map(len, requests)), "one pass for all, after the gate"
    for got, want in zip(gathered, alone, strict=True):
        cosine = torch.nn.functional.cosine_similarity(torch.tensor(got), torch.tensor(want))
        assert cosine.min() >= 0.99999


def test_gathered_labels_equal_each_request_alone(tmp_path) -> None:
    texts = [["w5 w9 w12 w40 w41 w7"], ["w7"], ["w8 w9", "w10 w11 w12 w13 w14 w15 w16 w17"]]
    for task, saved_as in (("TOKEN_CLS", "BertForTokenClassification"), ("SEQ_CLS", "BertForSequenceClassification")):
        base = families.save_word_tokenizer(families.save_base("bert", saved_as, str(tmp_path / task)))
        model_class = saved_as.replace("Bert", "AutoModel")
        alone = [load_baked(base, "m", task=task, model_class=model_class).classify("m", t) for t in texts]
        engine = load_baked(base, "m", task=task, model_class=model_class)
        gathered = _concurrently(engine, engine.classify, texts)
        assert [[_labels(r) for r in rs] for rs in gathered] == [[_labels(r) for r in rs] for rs in alone]
        for got, want in zip(gathered, alone, strict=True):
            torch.testing.assert_close(_probs(got), _probs(want), atol=1e-5, rtol=1e-4)


def _labels(result: dict) -> list:
    return [t["label"] for t in result["tokens"]] if "tokens" in result else [result["label"]]


def _probs(results: list[dict]) -> torch.Tensor:
    return torch.tensor(
        [p for r in results for p in ([t["probs"] for t in r["tokens"]] if "tokens" in r else [r["probs"]])]
    )


def test_passes_respect_the_row_and_padded_token_limits() -> None:
    seen: list[list[int]] = []

    def run(name: str, rows: list[dict]) -> list[int]:
        seen.append([len(r["input_ids"]) for r in rows])
        return [len(r["input_ids"]) for r in rows]

    gatherer = Gatherer(run, BatchLimits(max_batch_size=3, max_batch_tokens=20))
    lengths = [9, 1, 4, 2, 8, 3, 1, 5]
    request = Texts("m", [{"input_ids": [0] * n} for n in lengths])
    with gatherer.changed:  # queued before the thread may take it
        gatherer.submit(request)
    assert request.wait() == lengths, "outputs come back in the request's order"
    assert sorted(n for p in seen for n in p) == sorted(lengths)
    assert all(len(p) <= 3 and len(p) * max(p) <= 20 for p in seen), seen
    assert all(p == sorted(p) for p in seen) and seen == [[1, 1, 2], [3, 4, 5], [8, 9]]


def test_a_full_queue_answers_429_to_embeddings_at_once() -> None:
    from fastapi.testclient import TestClient

    from packager.runtime.server import create_app

    engine = load_baked(families.minilm_base(), "m", task="FEATURE_EXTRACTION", model_class="AutoModel")
    engine.configure(BatchLimits(max_queue=1))
    engine.model, gate = gated(engine.model)
    client = TestClient(create_app(engine))
    post = lambda: client.post("/v1/embeddings", json={"model": "m", "input": "a sentence"})  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post)
        wait_until(lambda: engine.scheduler.stats.running == 1)
        queued = pool.submit(post)
        wait_until(lambda: engine.scheduler.stats.waiting == 1)
        refused = post()
        assert refused.status_code == 429 and "max_queue" in refused.json()["error"]["message"]
        gate.set()
        assert running.result().status_code == 200 and queued.result().status_code == 200
