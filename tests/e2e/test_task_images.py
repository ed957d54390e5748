"""End to end for what is not a causal LM (issue 11): a baked embedding image on the real MiniLM weights answers
the `openai` client's embeddings call as PEFT does; the shared layout serves two embedding adapters over the
mounted base; a classifier image answers /classify and an encoder-decoder image completes text, each like the
host model."""

from __future__ import annotations

import json

import openai
import pytest
import torch
from peft import LoraConfig

from packager.package import package
from packager.runtime.loading import load_baked
from tests import families
from tests.e2e import containers
from tests.requests import package_request

pytestmark = pytest.mark.e2e
SENTENCES = ["A container serves the merged model.", "Adapters are small.", "The base is mounted read-only."]
TEXTS = ["w5 w9 w12 w40 w41", "w7 w8"]


def _package(tmp_path, runtime_image: str, adapters, layout: str, tag: str, **kw):
    request = package_request(
        tuple(adapters), layout, runtime_image, tag, work=str(tmp_path / "work"), quiet=True, builder="docker", **kw
    )
    return package(request, log=lambda _line: None)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def _vectors(url: str, model: str) -> torch.Tensor:
    answer = _client(url).embeddings.create(model=model, input=SENTENCES)
    return torch.tensor([d.embedding for d in answer.data])


def test_baked_embedding_image_answers_like_peft(runtime_image, docker_client, tmp_path) -> None:
    adapter = families.save_minilm_adapter(str(tmp_path / "adapter"))
    report = _package(  # packager's own server (test_vllm_pooling_images.py: the same on vLLM)
        tmp_path,
        runtime_image,
        [("minilm", adapter)],
        "baked",
        "tasks/minilm:1",
        base=families.minilm_base(),
        runtime="packager",
    )
    with open(report.lock) as f:
        lock = json.load(f)
    assert lock["task"] == {"name": "FEATURE_EXTRACTION", "class": "AutoModel"}
    container, url = containers.serve_on_host(docker_client, report.image)
    try:
        containers.wait_http(url, container)
        vectors = _vectors(url, "minilm")
        expected = families.minilm_embeddings(adapter, SENTENCES)
        assert torch.nn.functional.cosine_similarity(vectors, expected).min() >= 0.99999
        with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
            _client(url).completions.create(model="minilm", prompt="hello", max_tokens=2)
    finally:
        container.remove(force=True)


def test_shared_embedding_image_serves_each_adapter_over_the_mounted_base(runtime_image, docker_client, tmp_path):
    adapters = [(f"emb{i}", families.save_minilm_adapter(str(tmp_path / f"a{i}"), seed=i)) for i in (1, 2)]
    report = _package(tmp_path, runtime_image, adapters, "shared", "tasks/minilm-shared:1", base=families.minilm_base())
    container, url = containers.serve_on_host(docker_client, report.image, families.minilm_base())
    try:
        containers.wait_http(url, container)
        for name, adapter in adapters:
            expected = families.minilm_embeddings(adapter, SENTENCES)
            assert torch.nn.functional.cosine_similarity(_vectors(url, name), expected).min() >= 0.99999
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """A BERT classifier adapter (3 labels) and a T5 adapter, with a word tokenizer in each base."""
    root = tmp_path_factory.mktemp("tiny-tasks")
    made = {}
    for name, family, saved_as, task, targets, labels in [
        ("cls", "bert", "BertForPreTraining", "SEQ_CLS", ["query", "value"], 3),
        ("t5", "t5", "T5ForConditionalGeneration", "SEQ_2_SEQ_LM", ["q", "v"], None),
    ]:
        words = {"vocab_size": 100, "specials_last": True} if family == "t5" else {}
        base = families.save_word_tokenizer(families.save_base(family, saved_as, str(root / f"{name}-base")), **words)
        config = LoraConfig(task_type=task, r=4, lora_alpha=8, target_modules=targets)
        made[name] = (base, families.save_task_adapter(base, str(root / name), task, config, labels))
    return made


def check_classify(docker_client, image: str, host) -> None:
    """The image's /classify answers as the host's engine on the same model: labels and probabilities."""
    container = containers.start(docker_client, image)
    try:
        containers.wait_healthy(container)
        answer = containers.call(container, "/classify", {"model": "cls", "input": TEXTS})
    finally:
        container.remove(force=True)
    expected = host.classify("cls", TEXTS)
    assert [d["label"] for d in answer["data"]] == [e["label"] for e in expected]
    torch.testing.assert_close(
        torch.tensor([d["probs"] for d in answer["data"]]), torch.tensor([e["probs"] for e in expected])
    )


def test_classifier_image_answers_like_the_host_model(runtime_image, docker_client, tiny_models, tmp_path) -> None:
    base, adapter = tiny_models["cls"]
    adapters = [("cls", adapter)]
    report = _package(tmp_path, runtime_image, adapters, "baked", "tasks/cls:1", base=base, runtime="packager")
    merged = str(tmp_path / "work" / "merged")
    host = load_baked(merged, "cls", task="SEQ_CLS", model_class="AutoModelForSequenceClassification")
    check_classify(docker_client, report.image, host)


def test_seq2seq_image_completes_like_peft_generates(runtime_image, docker_client, tiny_models, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, adapter = tiny_models["t5"]
    report = _package(tmp_path, runtime_image, [("t5", adapter)], "baked", "tasks/t5:1", base=base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(families.load_in_task_class(base, "SEQ_2_SEQ_LM"), adapter).eval()
    out = model.generate(**tokenizer(TEXTS[0], return_tensors="pt", return_token_type_ids=False), max_new_tokens=6)
    container, url = containers.serve_on_host(docker_client, report.image)
    try:
        containers.wait_http(url, container)
        text = _client(url).completions.create(model="t5", prompt=TEXTS[0], max_tokens=6, temperature=0)
        expected = tokenizer.decode(out[0, 1:], skip_special_tokens=True)
        assert len(expected.split()) == out.shape[1] - 1 > 0 and text.choices[0].text == expected
    finally:
        container.remove(force=True)


def test_idefics2_image_answers_a_chat_request_with_an_image(runtime_image, docker_client, tmp_path) -> None:
    """The PEFT/IDEFICS2 article's adapter kind, packaged baked: the openai client's chat with an image part
    gets what the merged model generates on the host."""
    import base64
    import io

    from PIL import Image

    from packager.runtime.vision import load_vision

    base = families.save_idefics2(str(tmp_path / "base"))
    adapter = families.save_vlm_adapter(base, str(tmp_path / "adapter"))
    report = _package(tmp_path, runtime_image, [("look", adapter)], "baked", "tasks/idefics2:1", base=base)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 90)).save(buffer, "PNG")
    url = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "w5 w6"}]
    messages = [{"role": "user", "content": content}]
    host = load_vision(str(tmp_path / "work" / "merged"), ["look"], "none", "AutoModelForImageTextToText")
    from packager.runtime.models import GenerationParams

    ids, inputs = host.encode_image_chat("look", messages)
    expected = host.generate("look", ids, GenerationParams(max_tokens=5, temperature=0), inputs).text
    container, url_base = containers.serve_on_host(docker_client, report.image)
    try:
        containers.wait_http(url_base, container)
        answer = _client(url_base).chat.completions.create(model="look", messages=messages, max_tokens=5, temperature=0)
        assert answer.choices[0].message.content == expected
    finally:
        container.remove(force=True)


def test_a_litgpt_run_packages_into_an_image_that_answers_like_litgpts_merge(runtime_image, docker_client, tmp_path):
    """`litgpt finetune_lora`'s out/ folder as --adapter: the container's greedy completion is that of LitGPT's
    own merged model (merge_lora + convert_lit_checkpoint) loaded in transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests import litgpt_runs, models

    base = models.save_base(models.llama_config(num_attention_heads=4, num_key_value_heads=2), str(tmp_path / "hf"))
    families.save_word_tokenizer(base)
    run, expected_state = litgpt_runs.save_run(base, str(tmp_path / "out"), litgpt_runs.LORA)
    report = _package(tmp_path, runtime_image, [("lit", run)], "baked", "tasks/litgpt:1", base=base, allow_pickle=True)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.load_state_dict(expected_state)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(TEXTS[0], return_tensors="pt", return_token_type_ids=False)
    out = model.eval().generate(**ids, max_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert expected.strip()
    container = containers.start(docker_client, report.image)
    try:
        containers.wait_healthy(container)
        body = {"model": "lit", "prompt": TEXTS[0], "max_tokens": 8, "temperature": 0}
        assert containers.call(container, "/v1/completions", body)["choices"][0]["text"] == expected
    finally:
        container.remove(force=True)


def test_onnx_int8_embedding_image_answers_like_its_artefact(runtime_image, docker_client, tmp_path) -> None:
    """--export onnx --quantize int8 on the real MiniLM: the image serves /v1/embeddings through onnxruntime as the
    artefact answers on the host, close to the fp32 merge (issue 17)."""
    from packager.artefact.spec import artefact_spec

    adapter = families.save_minilm_adapter(str(tmp_path / "adapter"))
    report = _package(tmp_path, runtime_image, [("minilm", adapter)], "baked", "tasks/minilm-onnx:1",
                      base=families.minilm_base(), artefact=artefact_spec("int8", "onnx"))  # fmt: skip
    assert report.artefact["kind"] == "onnx-int8" and report.artefact["accuracy"]["cosine_mean"] >= 0.98
    assert docker_client.images.get(report.image).labels["io.packager.backend"] == "onnx"
    host = load_baked(str(tmp_path / "work" / "artefact"), "minilm", "onnx", task="FEATURE_EXTRACTION",
                      model_class="AutoModel")  # fmt: skip
    container, url = containers.serve_on_host(docker_client, report.image)
    try:
        containers.wait_http(url, container)
        expected = torch.tensor(host.embed("minilm", SENTENCES))
        served = _vectors(url, "minilm")
        torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-4)
        fp32 = families.minilm_embeddings(adapter, SENTENCES)
        assert torch.nn.functional.cosine_similarity(served, fp32).mean() >= 0.98
    finally:
        container.remove(force=True)


def test_onnx_int8_classifier_image_answers_like_its_artefact(runtime_image, docker_client, tiny_models, tmp_path):
    from packager.artefact.spec import artefact_spec

    base, adapter = tiny_models["cls"]
    report = _package(tmp_path, runtime_image, [("cls", adapter)], "baked", "tasks/cls-onnx:1", base=base,
                      artefact=artefact_spec("int8", "onnx"))  # fmt: skip
    host = load_baked(str(tmp_path / "work" / "artefact"), "cls", "onnx", task="SEQ_CLS",
                      model_class="AutoModelForSequenceClassification")  # fmt: skip
    check_classify(docker_client, report.image, host)
