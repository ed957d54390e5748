"""Helpers for the batching tests: an engine loaded from a runtime.json object as the server loads it, a model
whose passes wait at a gate (so requests can be queued behind a running one), and polling."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packager.runtime.batch_limits import BatchLimits
from packager.runtime.config import load_config
from packager.runtime.loading import load_engine


def load(config: dict, tmp_path: Path, limits: BatchLimits | None = None) -> Any:
    """The engine runtime.json describes (with `limits` as its batching object), as the server loads it."""
    path = tmp_path / f"runtime-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({**config, **({"batching": limits.to_json()} if limits else {})}))
    return load_engine(load_config(str(path), env={}))


class Wrapped:
    """A model with its call replaced; everything else (device, config, embeddings) passed through."""

    def __init__(self, model: Any, call: Callable[..., Any]) -> None:
        self.model, self.call = model, call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def gated(model: Any) -> tuple[Wrapped, threading.Event]:
    """`model` whose every pass waits until the returned event is set."""
    gate = threading.Event()

    def call(*args: Any, **kwargs: Any) -> Any:
        gate.wait(timeout=60)
        return model(*args, **kwargs)

    return Wrapped(model, call), gate


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)
