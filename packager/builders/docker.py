"""The docker builder: the Docker Engine API through the `docker` SDK (DOCKER_HOST, so remote engines work)."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from packager.builders.base import (
    BuildRequest,
    BuildResult,
    Layer,
    Log,
    PushRequest,
    PushResult,
    push_error,
    with_retries,
)
from packager.errors import EngineError, RegistryError, UserInputError
from packager.image.reference import split_target

DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def docker_build_kwargs(request: BuildRequest) -> dict[str, Any]:
    """Arguments for APIClient.build: no pulls, no network, intermediate containers removed."""
    return {
        "path": request.context,
        "dockerfile": request.dockerfile,
        "tag": request.tag,
        "network_mode": request.network_mode,
        "pull": False,
        "rm": True,
        "forcerm": True,
        "nocache": request.nocache,
        "decode": True,
    }


def image_labels(reference: str, engine_url: str | None = None) -> dict[str, str] | None:
    """The labels of an image in the Docker engine; None when there is no engine or no such image."""
    import docker
    import docker.errors

    url = engine_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
        return dict(client.api.inspect_image(reference).get("Config", {}).get("Labels") or {})
    except (docker.errors.DockerException, OSError):
        return None


def docker_auth_config(request: PushRequest) -> dict[str, str] | None:
    """Explicit credentials, or None to let the SDK use the user's docker config (docker login)."""
    if request.username is None:
        return None
    return {"username": request.username, "password": request.password or ""}


class DockerBuilder:
    """Builds and pushes through a Docker engine (the given URL, DOCKER_HOST or the local socket); fails at once
    when the engine is unreachable."""

    name = "docker"

    def __init__(self, engine_url: str | None = None) -> None:
        import docker

        self.url = engine_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
        try:
            self.client = docker.DockerClient(base_url=self.url, timeout=900)
            self.client.ping()
        except Exception as exc:
            raise EngineError(
                f"cannot reach the Docker engine at {self.url} ({exc.__class__.__name__}); start it "
                "(`make engine-up` starts a private one) or set DOCKER_HOST"
            ) from None
        self.api = self.client.api

    def build(self, request: BuildRequest, log: Log) -> BuildResult:
        """Build the context with the engine, logging its output; returns the image id, size and layers."""
        started = time.monotonic()
        image_id = None
        for chunk in self.api.build(**docker_build_kwargs(request)):
            if "error" in chunk:
                raise EngineError(f"image build failed: {chunk['error'].strip()}; see the build log above")
            if "stream" in chunk and chunk["stream"].strip():
                log(chunk["stream"].rstrip())
            image_id = chunk.get("aux", {}).get("ID", image_id)
        if image_id is None:
            raise EngineError("the engine finished the build without an image id; rerun with --debug")
        return BuildResult(
            self.name,
            request.tag,
            image_id,
            self.image_size(image_id),
            time.monotonic() - started,
            self.layers(image_id),
        )

    def image_size(self, image: str) -> int:
        """The local image's size in bytes, as the engine reports it."""
        return int(self.api.inspect_image(image)["Size"])

    def layers(self, image: str) -> tuple[Layer, ...]:
        """Filesystem layers, oldest first: diff ids paired with the history entries that made them."""
        diff_ids = self.api.inspect_image(image)["RootFS"]["Layers"]
        history = [h for h in reversed(self.api.history(image)) if h.get("Size", 0) > 0 or _makes_layer(h)]
        history = history[-len(diff_ids) :] if len(history) >= len(diff_ids) else [{}] * len(diff_ids)
        pairs = zip(diff_ids, history, strict=True)
        return tuple(Layer(d, int(h.get("Size", 0)), str(h.get("CreatedBy", ""))[:200]) for d, h in pairs)

    def push(self, request: PushRequest, log: Log) -> PushResult:
        """Tag the image as the target and push it, retrying transient registry failures."""
        started = time.monotonic()
        repository, tag = split_target(request.target)
        self._tag(request.image, repository, tag)
        (digest, pushed, skipped), attempt = with_retries(lambda: self._push_once(repository, tag, request, log), log)
        return PushResult(self.name, request.target, digest, time.monotonic() - started, attempt, pushed, skipped)

    def _tag(self, image: str, repository: str, tag: str) -> None:
        import docker.errors

        try:
            self.api.tag(image, repository, tag)
        except docker.errors.ImageNotFound:
            raise UserInputError(f"no local image {image!r} in the engine at {self.url}; build it first") from None

    def _push_once(self, repository: str, tag: str, request: PushRequest, log: Log) -> tuple[str, int, int]:
        """One push; returns (digest, bytes uploaded, layers the registry already had)."""
        import docker.errors

        try:
            return self._read_push_stream(repository, tag, request, log)
        except docker.errors.APIError as exc:  # raised when the engine refuses the push before streaming
            raise push_error(str(exc.explanation or exc), repository) from None

    def _read_push_stream(self, repository: str, tag: str, request: PushRequest, log: Log) -> tuple[str, int, int]:
        digest, totals, skipped = None, {}, 0
        stream = self.api.push(repository, tag, stream=True, decode=True, auth_config=docker_auth_config(request))
        for chunk in stream:  # the SDK reports most push errors inside the stream instead of raising
            if "error" in chunk:
                raise push_error(chunk["error"], repository)
            status = chunk.get("status", "")
            if status == "Layer already exists":
                skipped += 1
            elif status == "Pushing" and chunk.get("progressDetail", {}).get("total"):
                totals[chunk.get("id")] = chunk["progressDetail"]["total"]
            elif "digest:" in status:
                log(status)
            digest = chunk.get("aux", {}).get("Digest", digest) or _digest_in(status) or digest
        if not digest:
            raise RegistryError(f"push of {repository}:{tag} ended without a digest")
        return digest, sum(totals.values()), skipped


def _makes_layer(entry: dict[str, Any]) -> bool:
    created_by = str(entry.get("CreatedBy", ""))
    return any(word in created_by for word in ("COPY", "ADD", "RUN")) or "#(nop)" not in created_by


def _digest_in(status: str) -> str | None:
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
    return match.group(1) if match else None
