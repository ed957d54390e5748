"""A single background thread for sha256: hashlib releases the GIL, so hashing overlaps reading and writing.

Tasks run in submission order; `fence()` returns a future that completes once everything submitted before it
is done, which tells a reader when a buffer it handed out may be overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class HashPipeline:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packager-hash")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._executor.submit(fn, *args)

    def fence(self) -> Future:
        return self._executor.submit(lambda: None)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> HashPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlinePipeline(HashPipeline):
    """Runs each task at once in the caller's thread (for callers that need no overlap)."""

    def __init__(self) -> None:
        pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def fence(self) -> Future:
        return self.submit(lambda: None)

    def close(self) -> None:
        pass
