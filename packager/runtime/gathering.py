"""Batched embeddings and classification: the texts of concurrent /v1/embeddings and /classify requests gathered
into padded forward passes. Requests that arrive while a pass runs wait for the next one (no timer: an idle
server answers at once); the gathered texts of one served name are sorted by length, so each pass pads little,
and cut into passes of at most max_batch_size texts and max_batch_tokens padded tokens."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batching import BatchLimits, Scheduler


@dataclass(eq=False)
class Texts:
    """One request's tokenized texts, waiting for their outputs (one per text, in order)."""

    name: str
    encodings: list[dict[str, list[int]]]
    outputs: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    notify: Callable[[], None] | None = None  # called once the outputs are in (an event loop's wake-up)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def budget(self) -> int:
        """Tokens this request brings."""
        return sum(len(e["input_ids"]) for e in self.encodings)

    def end(self, error: BaseException | None = None) -> None:
        """Outputs are in (or `error` says why not): wake the request thread."""
        if self.finished.is_set():
            return
        self.error = self.error or error
        self.finished.set()
        if self.notify is not None:
            self.notify()

    def wait(self) -> list[Any]:
        """The outputs, once the passes that hold them have run; raises what broke them."""
        self.finished.wait()
        if self.error is not None:
            raise self.error
        return self.outputs


class Gatherer(Scheduler):
    """The thread that runs an encoder: `run(name, encodings)` is one padded forward pass giving one output per
    encoding."""

    def __init__(self, run: Callable[[str, list[dict[str, list[int]]]], list[Any]], limits: BatchLimits) -> None:
        super().__init__(limits)
        self.run = run

    def serve_once(self) -> None:
        """Every waiting request of the oldest one's name, in as few passes as the limits allow."""
        name: list[str] = []

        def same_name(texts: Any) -> bool:
            """Whether the request is for the first one's served name."""
            name[:] = name or [texts.name]
            return texts.name == name[0]

        requests = self.take(same_name, block=True, scan=True)
        self.stats.running = len(requests)
        try:
            self._serve(name[0] if name else "", requests)
        except Exception as exc:  # a failed pass fails its requests, not the server
            for request in requests:
                request.end(exc)
        for request in requests:
            request.end()
        self.stats.running = 0

    def _serve(self, name: str, requests: list[Texts]) -> None:
        items = [(r, i) for r in requests for i in range(len(r.encodings))]
        for request in requests:
            request.outputs = [None] * len(request.encodings)
        items.sort(key=lambda item: len(item[0].encodings[item[1]]["input_ids"]))
        for chunk in self._passes(items):
            outputs = self.run(name, [r.encodings[i] for r, i in chunk])
            self.stats.forward(len(chunk))
            for (request, index), output in zip(chunk, outputs, strict=True):
                request.outputs[index] = output

    def _passes(self, items: list[tuple[Texts, int]]) -> list[list[tuple[Texts, int]]]:
        """Items (sorted by length) cut where a pass would exceed the rows or the padded tokens allowed."""
        passes: list[list[tuple[Texts, int]]] = [[]]
        for request, index in items:
            length = len(request.encodings[index]["input_ids"])  # the longest so far: the list is sorted
            current = passes[-1]
            too_many = len(current) >= self.limits.max_batch_size
            if current and (too_many or (len(current) + 1) * length > self.limits.max_batch_tokens):
                passes.append(current := [])
            current.append((request, index))
        return passes
