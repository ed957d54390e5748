"""Vision-language chat: OpenAI messages whose content parts hold images (`image_url` with a `data:` URL) go
through the model's own processor (chat template, image placeholders, pixel values), then generate as text does.
Images come inside the request only: a server in a --network none container fetches nothing."""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from .checkpoints import load_transformers, with_adapters
from .models import Engine

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 20 << 20
MAX_PIXELS = 40_000_000
DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,(?P<data>.*)$", re.DOTALL)


class BadImage(ValueError):
    """An image part the server cannot take (not a data: URL, not an image, too large or too many)."""


class VisionEngine(Engine):
    """A vision-language model (or a base with adapters) answering chat messages with images; batched by grouped
    `generate` calls (a request with images runs alone)."""

    continuous = False

    def __init__(self, model: Any, processors: dict[str, Any], adapters: dict[str, str] | None = None) -> None:
        super().__init__(model, {name: p.tokenizer for name, p in processors.items()}, adapters)
        self.processors = processors

    def encode_image_chat(self, name: str, messages: list[dict[str, Any]]) -> tuple[list[int], dict[str, Any]]:
        """Token ids and pixel inputs of chat messages, ready for the assistant turn."""
        processor = self.processors[name]
        turns, images = _processor_messages(messages)
        prompt = processor.apply_chat_template(turns, add_generation_prompt=True)
        batch = processor(text=prompt, images=images or None, return_tensors="pt")
        dtype = getattr(self.model, "dtype", None)
        inputs = {
            k: v.to(self.model.device, dtype=dtype if v.is_floating_point() else None)
            for k, v in batch.items()
            if k not in ("input_ids", "attention_mask", "token_type_ids")
        }
        return batch["input_ids"][0].tolist(), inputs


def load_vision(
    model_dir: str, names: list[str], quantization: str, model_class: str, adapters: dict[str, str] | None = None
) -> VisionEngine:
    """A merged vision-language model served as `names[0]`, or (with `adapters`: name -> folder) a base with
    each PEFT adapter by name; the processor is the model folder's own."""
    from transformers import AutoProcessor

    model = load_transformers(model_dir, quantization, model_class)
    if adapters:
        model = with_adapters(model, list(adapters.items()))
    processor = AutoProcessor.from_pretrained(model_dir)
    return VisionEngine(model, dict.fromkeys(names, processor), {n: n for n in names} if adapters else None)


def _processor_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI content parts as the processor's chat template takes them, and the decoded images in order."""
    turns, images = [], []
    for message in messages:
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        converted = []
        for part in parts:
            if part.get("type") == "image_url":
                images.append(decode_image(part.get("image_url")))
                converted.append({"type": "image"})
            elif part.get("type") == "text":
                converted.append({"type": "text", "text": str(part.get("text", ""))})
        turns.append({"role": message["role"], "content": converted})
    if len(images) > MAX_IMAGES:
        raise BadImage(f"at most {MAX_IMAGES} images per request, got {len(images)}")
    return turns, images


def decode_image(image_url: Any) -> Any:
    """A PIL image from an OpenAI `image_url` part holding a base64 `data:` URL."""
    from PIL import Image

    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    match = DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise BadImage("image_url must be a data:image/...;base64, URL (this server fetches nothing)")
    if len(match["data"]) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadImage(f"an image may be at most {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(match["data"], validate=True)))
        if image.width * image.height > MAX_PIXELS:
            raise BadImage(f"an image may have at most {MAX_PIXELS} pixels, got {image.width}x{image.height}")
        return image.convert("RGB")
    except (binascii.Error, OSError, Image.DecompressionBombError, ValueError) as exc:
        if isinstance(exc, BadImage):
            raise
        raise BadImage(f"image_url holds no readable image ({exc.__class__.__name__})") from None
