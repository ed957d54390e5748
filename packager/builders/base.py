"""Build an image from a rendered context, behind one small Builder protocol.

Each builder turns a BuildRequest into its own call arguments with a pure function, and runs it in one
place, so what will run can be tested and printed without an engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildRequest:
    context: str
    tag: str
    dockerfile: str = "Dockerfile"
    network_mode: str = "none"  # builds never reach the network: weights and runtime come from the context
    nocache: bool = False


@dataclass(frozen=True)
class Layer:
    digest: str  # the layer's content digest (diff id) in the local image
    size: int
    created_by: str


@dataclass(frozen=True)
class BuildResult:
    builder: str
    tag: str
    image_id: str
    size: int
    seconds: float
    layers: tuple[Layer, ...] = field(default=())


@dataclass(frozen=True)
class PushRequest:
    image: str  # local image (tag or id)
    target: str  # registry[:port]/repo:tag
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PushResult:
    builder: str
    target: str
    digest: str
    seconds: float
    attempts: int
    pushed_bytes: int = 0  # compressed bytes uploaded (layers the registry lacked)
    skipped_layers: int = 0  # layers the registry already had


class Builder(Protocol):
    """What every builder offers: build a context into a local image, push it to a registry."""

    name: str

    def build(self, request: BuildRequest, log: Log) -> BuildResult: ...

    def push(self, request: PushRequest, log: Log) -> PushResult: ...


AUTH_PATTERNS = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "401")
UNREACHABLE_PATTERNS = ("connection refused", "no such host", "dial tcp", "i/o timeout", "connection reset")


def push_error(message: str, repository: str) -> Exception:
    """Turn a registry's or engine's push failure text into one of packager's errors, with the fix."""
    from packager.errors import RegistryAuthError, RegistryError, UserInputError

    lower = message.lower()
    host = repository.split("/", 1)[0]
    if any(p in lower for p in AUTH_PATTERNS):
        return RegistryAuthError(
            f"registry {host} refused the credentials ({message.strip()[:120]}); pass --username and "
            f"--password-stdin, or run `docker login {host}`"
        )
    if any(p in lower for p in UNREACHABLE_PATTERNS):
        return RegistryError(
            f"registry {host} is unreachable ({message.strip()[:120]}); check that it runs and the address is right"
        )
    if "invalid reference" in lower or "repository name must" in lower:
        return UserInputError(f"cannot push to {repository}: {message.strip()[:120]}; fix --tag")
    return RegistryError(f"push to {host} failed: {message.strip()[:160]}")
