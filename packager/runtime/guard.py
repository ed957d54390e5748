"""What every request passes first: the API key check (api_key.py) and the request metrics, as a plain ASGI
middleware. Starlette's `@app.middleware("http")` wraps each request in extra tasks and streams (about a
millisecond a request on 2 cores), which a batching server answering small requests cannot spare."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api_key import UNAUTHORIZED, authorized
from .metrics import Metrics


class Guard:
    """Refuses a request without the API key (401), and counts every request: running while it is answered, then
    by path and status, with its time to the response's first byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics, key: str | None) -> None:
        self.app, self.metrics, self.key = app, metrics, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, started = scope["path"], time.monotonic()
        state: dict[str, Any] = {"status": 500, "done": False}
        self.metrics.started()

        def finish() -> None:
            """Count the request once: when its response starts, or when it ends without one."""
            if not state["done"]:
                state["done"] = True
                self.metrics.finished(path, state["status"], time.monotonic() - started)

        header = dict(scope.get("headers") or []).get(b"authorization")
        if not authorized(path, header.decode("latin-1") if header else None, self.key):
            state["status"] = 401
            finish()
            await JSONResponse(UNAUTHORIZED, status_code=401)(scope, receive, send)
            return

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                finish()
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            finish()
