"""The API key both runtimes take: `PACKAGER_API_KEY` in the container's environment (a Secret in the manifests).
packager's server answers 401 to a request without `Authorization: Bearer <key>`, as vLLM does with its own
`VLLM_API_KEY` (the launcher hands the key over); /health and /metrics stay open for probes and scraping."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

API_KEY_ENV = "PACKAGER_API_KEY"
OPEN_PATHS = frozenset({"/health", "/metrics"})
UNAUTHORIZED = {
    "error": {
        "message": "invalid or missing API key; send `Authorization: Bearer <key>`",
        "type": "authentication_error",
    }
}


def api_key(environ: Mapping[str, str]) -> str | None:
    """The key requests must carry, or None (no key set: the server is open)."""
    return environ.get(API_KEY_ENV) or None


def authorized(path: str, header: str | None, key: str | None) -> bool:
    """Whether a request to `path` with this Authorization header may pass (compared in constant time)."""
    if key is None or path in OPEN_PATHS:
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def vllm_env(environ: Mapping[str, str]) -> dict[str, str]:
    """vLLM's own variable for the same key (it checks /v1 routes and leaves the rest open)."""
    key = api_key(environ)
    return {"VLLM_API_KEY": key} if key else {}
