"""AdapterHub adapters served unmerged by the `adapters` library: the server answers as the library's own model
does (greedy tokens equal in fp32; a prediction head's labels and probabilities), baked (one adapter, its static
head too) and shared (several on one base, chosen by `model`)."""

from __future__ import annotations

import json
from pathlib import Path

import adapters
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from packager.runtime.config import load_config
from packager.runtime.loading import load_engine
from packager.runtime.server import create_app
from tests import adapterhub_saves, families

PROMPT = "The quick brown fox"
N = 8
TEXTS = ["w5 w9 w17 w33", "w40 w41"]
GENERATIVE = {
    "bottleneck": (lambda: adapters.SeqBnConfig(reduction_factor=4), True),
    "bottleneck-2": (lambda: adapters.SeqBnConfig(reduction_factor=8), True),
    "double-bottleneck": (lambda: adapters.DoubleSeqBnConfig(reduction_factor=4), True),
    "compacter": (lambda: adapters.CompacterConfig(phm_dim=2, reduction_factor=4), True),
    "prefix": (lambda: adapters.PrefixTuningConfig(prefix_length=4), False),  # shared tensors: a pickle
    "gated-lora": (lambda: adapters.LoRAConfig(r=4, use_gating=True), True),
    "unipelt": (lambda: adapters.UniPELTConfig(), False),
}


@pytest.fixture(scope="module")
def hub(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapterhub-serving")
    saved = {
        name: adapterhub_saves.save(tiny["base"], str(root / name), make(), seed=i + 2, safetensors=safe)
        for i, (name, (make, safe)) in enumerate(GENERATIVE.items())
    }
    bert = families.save_word_tokenizer(families.save_base("bert", "BertModel", str(root / "bert")))
    for head in ("classification", "tagging"):
        for seed in (1, 2):
            saved[f"{head}-{seed}"] = adapterhub_saves.save(
                bert, str(root / f"{head}-{seed}"), adapters.SeqBnConfig(reduction_factor=4), head=head, seed=seed
            )
    saved["embeddings"] = adapterhub_saves.save(
        bert, str(root / "embeddings"), adapters.SeqBnConfig(reduction_factor=4), model_class="AutoModel"
    )
    return {**saved, "bert": bert}


def _client(tmp_path: Path, data: dict) -> TestClient:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps({**data, "adapter_library": "adapters"}))
    return TestClient(create_app(load_engine(load_config(str(path), env={}))))


def _library_text(base: str, adapter: str | None) -> str:
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(PROMPT)["input_ids"]
    model = adapterhub_saves.loaded(base, adapter) if adapter else adapterhub_saves.loaded_base(base)
    return tokenizer.decode(adapterhub_saves.greedy(model, ids, N), skip_special_tokens=True)


def _complete(client: TestClient, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": N, "temperature": 0}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


@pytest.mark.parametrize("name", [n for n in GENERATIVE if n != "bottleneck-2"])
def test_baked_answers_as_the_librarys_model(tiny, hub, name, tmp_path) -> None:
    data = {"layout": "baked", "model_dir": tiny["base"], "served_name": name, "adapter_dir": hub[name]}
    client = _client(tmp_path, data)
    expected = _library_text(tiny["base"], hub[name])
    assert expected != _library_text(tiny["base"], None), "the adapter must change the answer, or this proves nothing"
    assert _complete(client, name) == expected


def test_the_librarys_broken_kv_cache_is_measured_and_avoided(tiny, hub, tmp_path) -> None:
    """adapters 1.3.0's Llama attention drops the KV cache transformers 4.57 passes it: cached decoding differs
    from the forward pass, so the engine finds that at start and generates without the cache."""
    path = tmp_path / "runtime.json"
    data = {"layout": "baked", "model_dir": tiny["base"], "served_name": "b", "adapter_dir": hub["bottleneck"]}
    path.write_text(json.dumps({**data, "adapter_library": "adapters"}))
    engine = load_engine(load_config(str(path), env={}))
    assert engine.use_cache is False


def test_shared_serves_several_adapters_each_as_the_library_does(tiny, hub, tmp_path) -> None:
    served = {"one": hub["bottleneck"], "two": hub["bottleneck-2"]}
    data = {"layout": "shared", "base_dir": tiny["base"], "adapters": served, "lock": tiny["lock"]}
    client = _client(tmp_path, data)
    expected = {name: _library_text(tiny["base"], path) for name, path in served.items()}
    assert expected["one"] != expected["two"], "the adapters must differ, or this test proves nothing"
    assert {name: _complete(client, name) for name in ("one", "two", "one")} == expected


def _library_probs(base: str, adapter: str) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = adapterhub_saves.loaded(base, adapter)(**batch).logits
    return logits.softmax(-1)


def _classify(client: TestClient, model: str) -> list[dict]:
    answer = client.post("/classify", json={"input": TEXTS, "model": model})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_shared_prediction_heads_answer_with_their_own_labels(hub, tmp_path) -> None:
    served = {"a": hub["classification-1"], "b": hub["classification-2"]}
    data = {"layout": "shared", "base_dir": hub["bert"], "adapters": served, "verify_base": "off"}
    client = _client(tmp_path, {**data, "task": "SEQ_CLS", "model_class": "AutoModelForSequenceClassification"})
    for name, folder in served.items():
        expected = _library_probs(hub["bert"], folder)
        answers = _classify(client, name)
        torch.testing.assert_close(torch.tensor([d["probs"] for d in answers]), expected, atol=1e-5, rtol=1e-4)
        labels = [adapterhub_saves.HEAD_LABELS[int(i)] for i in expected.argmax(-1)]
        assert [d["label"] for d in answers] == labels and answers[0]["num_classes"] == 3
    assert not torch.allclose(_library_probs(hub["bert"], served["a"]), _library_probs(hub["bert"], served["b"]))


def test_a_tagging_head_labels_each_token_as_the_library_does(hub, tmp_path) -> None:
    data = {"layout": "baked", "model_dir": hub["bert"], "served_name": "t", "adapter_dir": hub["tagging-1"]}
    client = _client(tmp_path, {**data, "task": "TOKEN_CLS", "model_class": "AutoModelForTokenClassification"})
    expected = _library_probs(hub["bert"], hub["tagging-1"])
    answers = _classify(client, "t")
    for row, answer in zip(expected, answers, strict=True):
        got = torch.tensor([token["probs"] for token in answer["tokens"]])
        torch.testing.assert_close(got, row[: len(got)], atol=1e-5, rtol=1e-4)


def test_embeddings_from_a_bottleneck_adapter_equal_the_librarys(hub, tmp_path) -> None:
    data = {"layout": "baked", "model_dir": hub["bert"], "served_name": "e", "adapter_dir": hub["embeddings"]}
    client = _client(tmp_path, {**data, "task": "FEATURE_EXTRACTION", "model_class": "AutoModel"})
    answer = client.post("/v1/embeddings", json={"input": TEXTS, "model": "e"})
    assert answer.status_code == 200, answer.text
    tokenizer = AutoTokenizer.from_pretrained(hub["bert"])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = adapterhub_saves.loaded(hub["bert"], hub["embeddings"], "AutoModel")(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    vectors = torch.tensor([d["embedding"] for d in answer.json()["data"]])
    assert torch.nn.functional.cosine_similarity(vectors, expected).min() >= 0.9999


def test_the_adapters_library_needs_an_unmerged_adapter(tmp_path) -> None:
    from packager.runtime.config import ConfigError, parse_config

    data = {"layout": "baked", "model_dir": "m", "served_name": "x", "adapter_library": "adapters"}
    with pytest.raises(ConfigError, match="adapter_library adapters needs"):
        parse_config(data, str(tmp_path))


def test_an_adapter_on_a_16_bit_base_serves_in_the_bases_dtype(tiny, hub, tmp_path) -> None:
    """The library loads adapters in float32, which a bf16 base's layers refuse ("mat1 and mat2 must have the same
    dtype"): the engine casts them to the base's dtype (found by bench/serve.py on its bf16 bench model)."""
    from transformers import AutoModelForCausalLM

    base = str(tmp_path / "bf16")
    AutoModelForCausalLM.from_pretrained(tiny["base"]).to(torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny["base"]).save_pretrained(base)
    client = _client(
        tmp_path, {"layout": "baked", "model_dir": base, "served_name": "b", "adapter_dir": hub["bottleneck"]}
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = adapterhub_saves.loaded(base, hub["bottleneck"]).to(torch.bfloat16)
    expected = tokenizer.decode(
        adapterhub_saves.greedy(model, tokenizer(PROMPT)["input_ids"], N), skip_special_tokens=True
    )
    assert _complete(client, "b") == expected
