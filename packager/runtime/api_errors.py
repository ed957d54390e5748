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
