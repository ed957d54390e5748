"""Chat with images on packager's server: an Idefics2 merged model answers OpenAI image content parts as PEFT's
model generates on the same processor inputs, and image parts it cannot take are a 400 (issue 11)."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel

from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from packager.runtime.server import create_app
from packager.runtime.vision import load_vision
from tests import families


def _data_url(color: tuple[int, int, int], size=(40, 30), kind: str = "PNG") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, kind)
    return f"data:image/{kind.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _chat(url: str, text: str = "w5 w6") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    base = families.save_idefics2(str(root / "base"))
    adapter = families.save_vlm_adapter(base, str(root / "adapter"))
    run_merge(ResolveRequest(adapter, base=base), str(root / "merged"), quiet=True)
    engine = load_vision(str(root / "merged"), ["look"], "none", "AutoModelForImageTextToText")
    return base, adapter, TestClient(create_app(engine))


def test_chat_with_an_image_answers_as_peft_generates(served) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from packager.runtime.vision import decode_image

    base, adapter, client = served
    url = _data_url((200, 40, 90))
    body = {"model": "look", "messages": _chat(url), "max_tokens": 5, "temperature": 0}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    processor = AutoProcessor.from_pretrained(base)
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5 w6"}]}]
    inputs = processor(
        text=processor.apply_chat_template(turns, add_generation_prompt=True),
        images=[decode_image({"url": url})],
        return_tensors="pt",
    )
    inputs.pop("token_type_ids", None)
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter).eval()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.json()["choices"][0]["message"]["content"] == expected
    other = client.post("/v1/chat/completions", json={**body, "messages": _chat(_data_url((0, 0, 0)))})
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert other.status_code == 200 and streamed.status_code == 200 and "[DONE]" in streamed.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "data:image"),
        ("data:image/png;base64,not-base64!!", "no readable image"),
        ("data:image/png;base64," + base64.b64encode(b"plain text, not an image").decode(), "no readable image"),
    ],
)
def test_an_image_part_the_server_cannot_take_is_a_400(served, url, message) -> None:
    _, _, client = served
    answer = client.post("/v1/chat/completions", json={"messages": _chat(url), "max_tokens": 2})
    assert answer.status_code == 400 and message in answer.json()["error"]["message"]


def test_too_many_images_are_a_400(served) -> None:
    _, _, client = served
    parts = [{"type": "image_url", "image_url": {"url": _data_url((1, 2, 3))}}] * 9
    answer = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": parts}]})
    assert answer.status_code == 400 and "at most 8 images" in answer.text


def test_the_shared_layout_serves_each_vision_adapter_over_the_base(tmp_path) -> None:
    """Two LLaVA adapters by name over one base, each answering as PEFT does with that adapter."""
    from transformers import AutoModelForImageTextToText

    base = families.save_llava(str(tmp_path / "base"))
    adapters = {
        f"v{i}": families.save_vlm_adapter(base, str(tmp_path / f"a{i}"), seed=i, family="llava") for i in (1, 2)
    }
    engine = load_vision(base, list(adapters), "none", "AutoModelForImageTextToText", adapters)
    client = TestClient(create_app(engine))
    messages = _chat(_data_url((30, 160, 20)))
    ids, inputs = engine.encode_image_chat("v1", messages)
    for name, folder in adapters.items():
        body = {"model": name, "messages": messages, "max_tokens": 4, "temperature": 0}
        answer = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder).eval()
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([ids]), **inputs, max_new_tokens=4, do_sample=False)
        assert answer == engine.tokenizers[name].decode(out[0, len(ids) :], skip_special_tokens=True)
