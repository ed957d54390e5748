"""Streaming generation: token ids from `generate` as they come, turned into text deltas that never need taking
back (the newest token held back, since the next one can change how it decodes; a stop string held back until it
cannot be one), then OpenAI's server-sent-event chunks ending in `data: [DONE]`."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import anyio
import torch
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class TokenQueue:
    """A transformers streamer: `generate` puts new token ids in, the request thread takes them out."""

    def __init__(self) -> None:
        self._queue: queue.Queue[list[int] | None] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        """Called by generate: first with the prompt (skipped), then with each new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        """Called by generate when it is done."""
        self._queue.put(None)

    def __iter__(self) -> Iterator[list[int]]:
        while (ids := self._queue.get()) is not None:
            yield ids


class Cancelled:
    """Stopping criterion: stop generating once the client has gone away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


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
