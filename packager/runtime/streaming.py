"""OpenAI's answer formats: generated token ids turned into text deltas that never need taking back (the newest
token held back, since the next one can change how it decodes; a stop string held back until it cannot be one),
server-sent-event chunks ending in `data: [DONE]`, and the response bodies with their usage."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def safe_prefix(text: str, stops: Sequence[str]) -> str:
    """Of `text` (all tokens but the newest, decoded), what can be sent now: before any stop string, short of a
    tail that could still grow into one, and never a half-decoded character."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return text[: min(hits)]
    cut = len(text)
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if stop.startswith(text[-size:]):
                cut = min(cut, len(text) - size)
                break
    # a trailing U+FFFD is half a character whose next bytes have not come yet; one inside the text is a byte
    # sequence that will never decode, and must not hold back everything after it
    return text[:cut].rstrip("\ufffd")


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def usage_of(result: Any) -> dict[str, int]:
    """OpenAI's usage object of a Generation."""
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def response_body(prefix: str, kind: str, name: str, choice: dict, result: Any) -> dict[str, Any]:
    """A whole (unstreamed) completion or chat completion with one choice."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": name,
        "choices": [choice],
        "usage": usage_of(result),
    }


def chunk_base(chat: bool, name: str) -> dict[str, Any]:
    """The fields every chunk of one stream repeats."""
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": name,
    }


def sse_events(
    base: dict[str, Any], items: Iterator[Any], chat: bool, usage: bool, done: Callable[[Any], None]
) -> Generator[str, None, None]:
    """The role chunk (chat), a chunk per piece of text in `items`, the finish chunk when the Generation that ends
    them comes (passed to `done`), a usage chunk when asked (stream_options.include_usage), then [DONE]; `items`
    is closed however the stream ends."""
    if chat:
        yield sse(chat_chunk(base, {"role": "assistant", "content": ""}, None))
    with closing(items):  # type: ignore[type-var]
        for item in items:
            if isinstance(item, str):
                yield sse(chat_chunk(base, {"content": item}, None) if chat else completion_chunk(base, item, None))
                continue
            done(item)
            yield sse(
                chat_chunk(base, {}, item.finish_reason) if chat else completion_chunk(base, "", item.finish_reason)
            )
            if usage:
                yield sse({**base, "choices": [], "usage": usage_of(item)})
    yield sse("[DONE]")


def completion_chunk(base: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
    """A streamed /v1/completions chunk."""
    return {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


def chat_chunk(base: dict[str, Any], delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    """A streamed /v1/chat/completions chunk."""
    return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse of a generator that is closed however the response ends. Starlette cancels a response
    whose client left but leaves its iterator suspended, to be closed by the garbage collector, which may not come
    for a long time: the generation's `finally` (stop generating, release the engine's lock) must run now."""

    def __init__(self, content: Generator[str, None, None], media_type: str = "text/event-stream") -> None:
        super().__init__(content, media_type=media_type)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # shielded: this runs while the response is being cancelled; the close joins the generation thread
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._content.close)
