"""Background lanes for the streaming merge, one thread each: `hash` (sha256) and `io` (writing the output).

hashlib and file writes release the GIL, so both overlap reading and merging on the main thread. Tasks run in
submission order within a lane; `fence()` completes once everything submitted to either lane before it is done,
which tells a reader when a buffer it handed out may be overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def _nothing() -> None:
    return None


class Fence:
    """Done when every future it holds is done; `result()` waits for them (and raises what they raised)."""

    def __init__(self, *futures: Future) -> None:
        self._futures = futures

    def result(self) -> None:
        for future in self._futures:
            future.result()


class Pipeline:
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
        return Fence(self._hash.submit(_nothing), self._io.submit(_nothing))

    def close(self) -> None:
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
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    submit_io = submit

    def fence(self) -> Fence:
        return Fence()

    def close(self) -> None:
        pass
