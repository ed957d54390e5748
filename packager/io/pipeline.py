"""Background lanes for the streaming merge, one thread each: `hash` (sha256) and `io` (writing the output).

hashlib and file writes release the GIL, so both overlap reading and merging on the main thread. Tasks run in
submission order within a lane; `fence()` completes once everything submitted to either lane before it is done,
which tells a reader when a buffer it handed out may be overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


def _nothing() -> None:
    return None


class Fence:
    """Done when every future it holds is done; `result()` waits for them (and raises what they raised)."""

    def __init__(self, *futures: Future) -> None:
        self._futures = futures

    def result(self) -> None:
        """Wait for every future held, raising the error of the first that failed."""
        for future in self._futures:
            future.result()


class Pipeline:
    """The `hash` and `io` lanes, one thread each; as a context manager it closes them on exit."""

    def __init__(self) -> None:
        self._hash = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packager-hash")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packager-io")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn` on the hash lane."""
        return self._hash.submit(fn, *args)

    def submit_io(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn` on the io lane."""
        return self._io.submit(fn, *args)

    def fence(self) -> Fence:
        """A Fence that completes once everything submitted to either lane so far is done."""
        return Fence(self._hash.submit(_nothing), self._io.submit(_nothing))

    def close(self) -> None:
        """Finish the queued tasks and stop both lanes' threads."""
        self._io.shutdown(wait=True)
        self._hash.shutdown(wait=True)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlinePipeline(Pipeline):
    """Runs each task at once in the caller's thread (for callers that need no overlap)."""

    def __init__(self) -> None:
        pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn` now; its result comes back in a done future (an exception propagates at once)."""
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    submit_io = submit

    def fence(self) -> Fence:
        """An already complete Fence: every task ran when it was submitted."""
        return Fence()

    def close(self) -> None:
        """Nothing to stop: there are no threads."""
        pass


class BufferRing:
    """Byte buffers handed out in turn, so streaming allocates nothing per tensor. A buffer is handed out again
    only once the pipeline has done everything it was given before the buffer was released (the writes and
    hashes of what the buffer held)."""

    def __init__(self, pipeline: Pipeline, count: int = 2, reserve: int = 0) -> None:
        self._pipeline = pipeline
        self._buffers = [torch.empty(reserve, dtype=torch.uint8) for _ in range(count)]
        self._fences: list[Fence | None] = [None] * count
        self._taken: list[int] = []
        self._next = 0

    def take(self, nbytes: int) -> torch.Tensor:
        """The next buffer, `nbytes` long, once the pipeline work it was last released with is done."""
        slot, self._next = self._next, (self._next + 1) % len(self._buffers)
        fence, self._fences[slot] = self._fences[slot], None
        if fence is not None:
            fence.result()
        if self._buffers[slot].numel() < nbytes:
            self._buffers[slot] = torch.empty(nbytes, dtype=torch.uint8)
        self._taken.append(slot)
        return self._buffers[slot][:nbytes]

    def like(self, tensor: torch.Tensor) -> torch.Tensor:
        """A buffer viewed with `tensor`'s dtype and shape."""
        return self.take(tensor.numel() * tensor.element_size()).view(tensor.dtype).view(tensor.shape)

    def release(self) -> None:
        """The buffers taken since the last release are done with, once the pipeline has done what it has now."""
        if self._taken:
            fence = self._pipeline.fence()
            for slot in self._taken:
                self._fences[slot] = fence
            self._taken.clear()
