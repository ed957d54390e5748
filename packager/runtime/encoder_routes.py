"""The endpoints of an encoder: OpenAI's /v1/embeddings for embedding models, and /classify (vLLM's request and
response shape) for classifiers. Text-generation endpoints answer 400 with the endpoint to use."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .api_errors import ApiError, served_name
from .encoders import Encoder
from .metrics import Metrics

MAX_INPUTS = 256  # per request: a bigger batch is split by the client, as OpenAI's limit makes it


class EncodeRequest(BaseModel):
    """Body of /v1/embeddings and /classify: one text or a list of texts."""

    model: str | None = None
    input: str | list[str] = Field(min_length=1)
    encoding_format: str = "float"


def add_encoder_routes(app: FastAPI, engine: Encoder, metrics: Metrics) -> None:
    """The routes `engine` serves, by its task."""
    endpoint = "/v1/embeddings" if engine.task == "FEATURE_EXTRACTION" else "/classify"

    @app.post("/v1/completions")
    @app.post("/v1/chat/completions")
    def not_a_generator() -> None:
        """This model does not generate text: say which endpoint it serves."""
        raise ApiError(400, f"this model does not generate text ({engine.task}); use POST {endpoint}")

    if engine.task == "FEATURE_EXTRACTION":

        @app.post("/v1/embeddings")
        async def embeddings(req: EncodeRequest) -> JSONResponse:
            """OpenAI embeddings: one mean-pooled vector per input, in input order. Answered as JSON directly:
            FastAPI's generic encoder walks every float (13 ms for 32 vectors of 384, a fifth of an int8 forward)."""
            name, texts, rows = _checked(engine, req)
            if req.encoding_format not in ("float", "base64"):
                raise ApiError(400, "encoding_format must be float or base64")
            vectors = engine.vectors(await _outputs(engine, name, texts, rows))
            tokens = sum(len(r["input_ids"]) for r in rows)
            metrics.generated(tokens, 0)
            encoded = [_base64(v) for v in vectors] if req.encoding_format == "base64" else vectors
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(encoded)]
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            return JSONResponse({"object": "list", "data": data, "model": name, "usage": usage})

        return

    @app.post("/classify")
    async def classify(req: EncodeRequest) -> dict[str, Any]:
        """vLLM's /classify: per input its label and class probabilities (or those of each token)."""
        name, texts, rows = _checked(engine, req)
        results = engine.labelled(name, await _outputs(engine, name, texts, rows))
        tokens = sum(len(r["input_ids"]) for r in rows)
        metrics.generated(tokens, 0)
        data = [{"index": i, **r, "num_classes": engine.num_classes(name)} for i, r in enumerate(results)]
        return {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }


async def _outputs(engine: Encoder, name: str, texts: list[str], rows: list[dict]) -> list[Any]:
    """The texts' outputs from the gatherer, awaited on the event loop: no worker thread is held per request
    (one request thread per waiting request cost more than the pass on 2 cores)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        """Resolve the future from the gatherer's thread, on the event loop's."""
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    request = engine.submit(name, texts, rows, notify=wake)
    await done
    return request.wait()


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the float32 values, little-endian (what the `openai` client asks for)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _checked(engine: Encoder, req: EncodeRequest) -> tuple[str, list[str], list[dict]]:
    """The served name, the inputs as a list and tokenized (once: the counts are the rows' lengths); 400 for
    what the model cannot take."""
    name = served_name(engine.names, req.model)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if len(texts) > MAX_INPUTS or not all(texts):
        raise ApiError(400, f"input must be 1 to {MAX_INPUTS} non-empty strings")
    rows = engine.tokenize(name, texts)
    counts = [len(r["input_ids"]) for r in rows]
    limit = engine.context_length()
    if limit is not None and max(counts) > limit:
        raise ApiError(
            400, f"This model's maximum context length is {limit} tokens. However, an input has {max(counts)} tokens."
        )
    return name, texts, rows
