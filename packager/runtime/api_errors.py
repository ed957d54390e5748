"""Errors answered in OpenAI's format, shared by every endpoint."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(message: str) -> dict[str, Any]:
    """An error response body in OpenAI's format."""
    return {"error": {"message": message, "type": "invalid_request_error"}}


def served_name(names: list[str], requested: str | None) -> str:
    """The served model a request names; omitted is fine when only one is served (400 / 404 otherwise)."""
    available = ", ".join(names)
    if requested is None:
        if len(names) == 1:
            return names[0]
        raise ApiError(400, f"`model` is required; available: {available}")
    if requested not in names:
        raise ApiError(404, f"model '{requested}' not found; available: {available}")
    return requested
