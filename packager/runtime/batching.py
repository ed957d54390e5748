"""What batched generation shares: the limits runtime.json sets, one request in flight (a Row: its prompt, its
own sampling, its own stop conditions, the queue its tokens go to), and the scheduler thread that owns the model.

Request threads submit rows and read their tokens; one scheduler thread runs every forward pass, so the model
never sees two threads. How rows are put into forward passes is the scheduler's subclass: continuous.py (rows
join and leave a running batch at every step) or grouped.py (a batch of compatible rows runs `generate` to the
end while the next batch gathers)."""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .batch_limits import BatchLimits

__all__ = ["BatchLimits", "GenerationParams", "QueueFull", "Row", "Scheduler", "Stats", "group_key"]
_ids = itertools.count()


class QueueFull(Exception):
    """More requests are waiting than runtime.json's max_queue allows: answered with HTTP 429 at once."""


@dataclass(frozen=True)
class GenerationParams:
    """OpenAI-style sampling settings; temperature 0 means greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(eq=False)
class Row:
    """One request in flight: what it asks, and where its tokens go (lists of ids, then None; or an exception)."""

    adapter: str | None
    prompt: list[int]
    params: GenerationParams
    finished: Callable[[list[int]], bool]  # EOS or a stop string in these new ids
    inputs: dict | None = None  # what the model takes beside the ids (a vision model's pixel values)
    tokens: list[int] = field(default_factory=list)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    id: int = field(default_factory=lambda: next(_ids))
    done: bool = False
    ended: bool = False
    rng: torch.Generator | None = None  # the row's own random stream when it asked for a seed

    def __post_init__(self) -> None:
        if self.params.seed is not None:  # so its sample does not depend on its neighbours in the batch
            self.rng = torch.Generator().manual_seed(self.params.seed)

    @property
    def budget(self) -> int:
        """Tokens this row may hold at most: its prompt plus its completion."""
        return len(self.prompt) + self.params.max_tokens

    @property
    def greedy(self) -> bool:
        """Whether the row takes the most likely token (temperature 0)."""
        return self.params.temperature <= 0

    def take(self, token: int) -> bool:
        """Record a new token, send it, and say whether the row is done (length, EOS, stop string, client gone)."""
        self.first_token = self.first_token or time.monotonic()
        self.tokens.append(token)
        self.out.put([token])
        self.done = len(self.tokens) >= self.params.max_tokens or self.finished(self.tokens) or self.cancelled.is_set()
        return self.done

    def end(self, error: BaseException | None = None) -> None:
        """No more tokens: the reader stops (and raises `error` when the batch failed and the row was not done).
        Only the first call counts."""
        if not self.ended:
            self.out.put(None if self.done else error)
            self.done = self.ended = True

    def stream(self) -> Iterator[list[int]]:
        """The row's token ids as they come, all that have come at once (a reader that fell behind catches up in
        one piece); raises what broke the batch."""
        ended = False
        while not ended:
            ids: list[int] = []
            item = self.out.get()
            while True:
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    ended = True
                    break
                ids += item
                try:
                    item = self.out.get_nowait()
                except queue.Empty:
                    break
            if ids:
                yield ids


class Stats:
    """What /metrics reports about the scheduler: waiting requests, rows per forward pass, time to first token."""

    def __init__(self) -> None:
        self.waiting = 0
        self.running = 0
        self.batch_rows = self.batches = 0
        self.ttft_sum, self.ttft_count = 0.0, 0

    def forward(self, rows: int) -> None:
        """A forward pass over `rows` rows."""
        self.batch_rows += rows
        self.batches += 1

    def took(self, row: Row, token: int) -> None:
        """Give `row` its new token (Row.take); its first one counts toward the time to first token."""
        first = not row.tokens
        row.take(token)
        if first:
            self.ttft_sum += (row.first_token or time.monotonic()) - row.submitted
            self.ttft_count += 1


class Scheduler:
    """The thread that runs the model: it takes submitted rows from a bounded queue and serves them in batches
    (`serve_once`, per subclass); started on the first request."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits, self.stats = limits, Stats()
        self.waiting: deque[Row] = deque()
        self.changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, row: Row) -> Row:
        """Queue a row; raises QueueFull at once when max_queue rows are already waiting."""
        with self.changed:
            if len(self.waiting) >= self.limits.max_queue:
                raise QueueFull(
                    f"{len(self.waiting)} requests are waiting, the most this server queues (max_queue); retry later"
                )
            self.waiting.append(row)
            self.stats.waiting = len(self.waiting)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="packager-scheduler", daemon=True)
                self._thread.start()
                atexit.register(self.stop)
            self.changed.notify()
        return row

    def take(self, fits: Callable[[Row], bool], block: bool, scan: bool = False) -> list[Row]:
        """Waiting rows, oldest first, while `fits` accepts them (it sees each in turn and may keep count). Stops at
        the first it refuses, so no row is overtaken for ever; with `scan`, looks past it (the caller serves the
        oldest row first). Rows whose client left are dropped. With `block`, waits for a first row."""
        with self.changed:
            while block and not self.waiting and not self._stopping:
                self.changed.wait()
            taken: list[Row] = []
            left: deque[Row] = deque()
            while self.waiting:
                row = self.waiting.popleft()
                if row.cancelled.is_set():
                    row.end()
                elif fits(row):
                    taken.append(row)
                elif scan:
                    left.append(row)
                else:
                    self.waiting.appendleft(row)
                    break
            self.waiting.extendleft(reversed(left))
            self.stats.waiting = len(self.waiting)
            return taken

    def serve_once(self) -> None:
        """Serve what is waiting for one round; blocks while there is nothing to do."""
        raise NotImplementedError

    def stop(self) -> None:
        """Let the thread finish its round and end (at exit: a thread blocked in a wait would abort the process)."""
        with self.changed:
            self._stopping = True
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping:
            self.serve_once()


def group_key(row: Row) -> Hashable:
    """Rows that can share one `generate` call: same adapter and inputs-free, same sampling; a seeded or sampled
    row with its own settings, or one with extra inputs, runs alone."""
    if row.inputs is not None or row.params.seed is not None:
        return ("alone", row.id)
    sampling: Any = "greedy" if row.greedy else (row.params.temperature, row.params.top_p)
    return (row.adapter, sampling)
