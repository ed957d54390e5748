"""Build an image from a rendered context, behind one small Builder protocol.

Each builder turns a BuildRequest into its own call arguments with a pure function, and runs it in one
place, so what will run can be tested and printed without an engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildRequest:
    """What to build: a context folder and its Dockerfile, and the tag to give the image."""

    context: str
    tag: str
    dockerfile: str = "Dockerfile"
    network_mode: str = "none"  # builds never reach the network: weights and runtime come from the context
    nocache: bool = False


@dataclass(frozen=True)
class Layer:
    """One filesystem layer of a built image."""

    digest: str  # the layer's content digest (diff id) in the local image
    size: int
    created_by: str


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the image id, its size in bytes, how long it took, and its layers."""

    builder: str
    tag: str
    image_id: str
    size: int
    seconds: float
    layers: tuple[Layer, ...] = field(default=())


@dataclass(frozen=True)
class PushRequest:
    """What to push: a local image, the registry target, and credentials when given."""

    image: str  # local image (tag or id)
    target: str  # registry[:port]/repo:tag
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PushResult:
    """What a push did: the manifest digest, the time and attempts it took, and what it uploaded."""

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

    def build(self, request: BuildRequest, log: Log) -> BuildResult:
        """Build `request` into a local image, sending progress lines to `log`."""
        ...

    def push(self, request: PushRequest, log: Log) -> PushResult:
        """Push a local image to its registry target, sending progress lines to `log`."""
        ...


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


PUSH_ATTEMPTS = 3
T = TypeVar("T")


def with_retries(push_once: Callable[[], T], log: Log, attempts: int = PUSH_ATTEMPTS) -> tuple[T, int]:
    """Run one push attempt until it succeeds; a RegistryError (transient: network, 5xx) is retried with a
    growing pause, any other error (credentials, a bad tag) is raised at once. Returns (result, attempts)."""
    from packager.errors import RegistryError

    for attempt in range(1, attempts + 1):
        try:
            return push_once(), attempt
        except RegistryError as exc:
            if attempt == attempts:
                raise
            log(f"push attempt {attempt} failed ({exc}); retrying")
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")
