"""OpenAI-compatible HTTP server for the packaged model: /health, /metrics, /v1/models, and for text generation
/v1/completions and /v1/chat/completions (both also streamed as server-sent events with `stream: true`); an
embedding model serves /v1/embeddings and a classifier /classify instead (encoder_routes.py).

CLI: python3 -m packager_runtime.server [--config /opt/packager/runtime.json] [--host 0.0.0.0] [--port N]
(env PORT overrides runtime.json's port; --port overrides both). Exit 2: bad config; exit 3: wrong or missing base;
exit 4: the config needs hardware the container lacks (a CUDA GPU for load-time quantization).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from .api_errors import ApiError, error_body, served_name
from .api_key import API_KEY_ENV, api_key
from .batching import QueueFull
from .checkpoints import HardwareMissing
from .config import ConfigError, load_config
from .encoder_routes import add_encoder_routes
from .encoders import Encoder, PoolingUnsupported
from .guard import Guard
from .loading import load_engine
from .metrics import Metrics
from .models import Engine, Generation, GenerationParams, NoChatTemplate
from .signature import SignatureMismatch
from .startup import exit_code, parse_args, serving_port
from .streaming import ClosingStreamingResponse, chunk_base, response_body, sse_events
from .verify_base import BaseMismatch
from .vision import BadImage, VisionEngine


class Sampling(BaseModel):
    """Fields both completion endpoints accept."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None  # {"include_usage": true}: a last chunk with the usage
    n: int = 1


class CompletionRequest(Sampling):
    """Body of /v1/completions: the sampling fields plus a plain prompt."""

    prompt: str


class ChatMessage(BaseModel):
    """One chat message; its content is text or a list of OpenAI content parts."""

    role: str
    content: str | list[dict[str, Any]]


class ChatRequest(Sampling):
    """Body of /v1/chat/completions: the sampling fields plus at least one message."""

    messages: list[ChatMessage] = Field(min_length=1)


def create_app(engine: Engine | Encoder, key: str | None = None) -> FastAPI:
    """The FastAPI app serving `engine` (already loaded); `key`: the API key requests must carry (api_key.py)."""
    app = FastAPI(title="packager runtime")
    metrics = Metrics(engine.scheduler.stats)

    app.add_middleware(Guard, metrics=metrics, key=key)

    @app.exception_handler(QueueFull)
    def _busy(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(ApiError)
    def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(error_body(f"{where}: {first.get('msg')}" if where else str(first.get("msg"))), 400)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness check; the app is only created once the model is loaded, so ok means ready."""
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        """Prometheus metrics: requests, tokens, request time, requests running."""
        return metrics.render()

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        """The served model names in OpenAI's model-list format."""
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "packager"} for n in engine.names]
        if isinstance(engine, Encoder):  # what the vectors or labels are, for the client
            data = [{**d, "task": engine.task, "pooling": engine.pooling} for d in data]
        return {"object": "list", "data": data}

    if isinstance(engine, Encoder):
        add_encoder_routes(app, engine, metrics)
        return app

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> Any:
        """OpenAI text completion of a plain prompt; `stream: true` answers with server-sent events."""
        name = _model_name(engine, req)
        ids, params = engine.encode_prompt(name, req.prompt), _params(req)
        _check_length(engine, ids, params)
        if req.stream:
            return _stream(engine, metrics, name, ids, params, chat=False, usage=_wants_usage(req))
        result = engine.generate(name, ids, params)
        metrics.generated(result.prompt_tokens, result.completion_tokens)
        choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
        return response_body("cmpl", "text_completion", name, choice, result)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> Any:
        """OpenAI chat completion through the model's chat template (400 when the model has none); `stream: true`
        answers with server-sent events."""
        name = _model_name(engine, req)
        ids, inputs = _chat_inputs(engine, name, req.messages)
        params = _params(req)
        _check_length(engine, ids, params)
        if req.stream:
            return _stream(engine, metrics, name, ids, params, chat=True, inputs=inputs, usage=_wants_usage(req))
        result = engine.generate(name, ids, params, inputs)
        metrics.generated(result.prompt_tokens, result.completion_tokens)
        message = {"role": "assistant", "content": result.text}
        choice = {"index": 0, "message": message, "finish_reason": result.finish_reason}
        return response_body("chatcmpl", "chat.completion", name, choice, result)

    return app


def _model_name(engine: Engine, req: Sampling) -> str:
    """The served name the request asks for; omitted is fine when only one model is served."""
    if req.n != 1:
        raise ApiError(400, "n > 1 is not supported by this server; send n requests")
    return served_name(engine.names, req.model)


def _check_length(engine: Engine, ids: list[int], params: GenerationParams) -> None:
    """Refuse what the model cannot hold, as vLLM does: prompt plus max_tokens over the context length."""
    limit = engine.context_length()
    wanted = len(ids) + params.max_tokens
    if limit is not None and wanted > limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested {wanted} tokens "
            f"({len(ids)} in the messages, {params.max_tokens} in the completion). Please reduce the length of "
            "the messages or completion.",
        )


def _chat_inputs(engine: Engine, name: str, messages: list[ChatMessage]) -> tuple[list[int], dict | None]:
    """Token ids of chat messages (and a vision model's pixel inputs); 400 for what the model cannot take."""
    if isinstance(engine, VisionEngine):
        try:
            return engine.encode_image_chat(name, [m.model_dump() for m in messages])
        except BadImage as exc:
            raise ApiError(400, str(exc)) from None
    if any(isinstance(m.content, list) and any(p.get("type") == "image_url" for p in m.content) for m in messages):
        raise ApiError(400, f"model '{name}' takes no images; send text content only")
    try:
        return engine.encode_chat(name, [{"role": m.role, "content": _text(m.content)} for m in messages]), None
    except NoChatTemplate as exc:
        raise ApiError(400, str(exc)) from None


def _wants_usage(req: Sampling) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))


def _stream(
    engine: Engine,
    metrics: Metrics,
    name: str,
    ids: list[int],
    params,
    chat: bool,
    inputs: dict | None = None,
    usage: bool = False,
) -> ClosingStreamingResponse:
    """Server-sent events in OpenAI's chunk format (streaming.sse_events); the request is queued before the
    response starts, so a full queue answers 429, not a broken stream."""
    items = engine.stream(name, ids, params, inputs)

    def done(result: Generation) -> None:
        """Count the finished generation's tokens."""
        metrics.generated(result.prompt_tokens, result.completion_tokens)

    return ClosingStreamingResponse(sse_events(chunk_base(chat, name), items, chat, usage, done))


def _params(req: Sampling) -> GenerationParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(s for s in req.stop or () if s)
    return GenerationParams(
        max_tokens=16 if req.max_tokens is None else req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop,
        seed=req.seed,
    )


def _text(content: str | list[dict[str, Any]]) -> str:
    """Message content as text (OpenAI content parts: the text parts joined)."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


EXIT_CODES = {ConfigError: 2, PoolingUnsupported: 2, BaseMismatch: 3, SignatureMismatch: 3, HardwareMissing: 4}


def main(argv: list[str] | None = None) -> int:
    """Start-up: config, base check, model load, then serve; one `error:` line and exit 2/3 on bad input."""
    args = parse_args("packager_runtime.server", "Serve the packaged model.", argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the image never downloads
    try:
        config = load_config(args.config)
        port = serving_port(args, config)
        engine = load_engine(config)
    except tuple(EXIT_CODES) as exc:
        return exit_code(exc, EXIT_CODES)
    import uvicorn

    print(
        f"packager runtime: serving {', '.join(engine.names)} ({config.layout} layout) on port {port}", file=sys.stderr
    )
    key = api_key(os.environ)
    if key:
        print(f"packager runtime: requests need the API key ({API_KEY_ENV})", file=sys.stderr)
    uvicorn.run(create_app(engine, key), host=args.host, port=port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
