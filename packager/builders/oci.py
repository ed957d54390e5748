"""The oci builder: no image build at all. Each COPY of the rendered Dockerfile becomes an uncompressed layer
streamed from the context straight to the registry (safetensors do not compress, so gzip only costs time);
the runtime base image's layers come from the Docker engine once and are skipped when the registry has them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from packager.builders.base import (
    BuildRequest,
    BuildResult,
    Layer,
    Log,
    PushRequest,
    PushResult,
)
from packager.builders.blob_locations import remember_blobs, source_repository
from packager.builders.oci_image import image_config, layer_tar
from packager.builders.registry_client import CHUNK_BYTES, RegistryClient
from packager.errors import EngineError, RegistryError, UserInputError
from packager.image.dockerfile import ImageRecipe, parse_dockerfile
from packager.image.reference import registry_host, split_target

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class OciBuilder:
    """Builds no image: plans layers from the rendered Dockerfile and streams them to the registry at push time;
    the Docker engine only supplies the runtime base image."""

    name = "oci"

    def __init__(self, engine_url: str | None = None) -> None:
        from packager.builders.docker import DockerBuilder

        self._engine = DockerBuilder(engine_url)  # only to read the runtime base image
        self._built: dict[str, tuple[str, ImageRecipe, list[Layer], dict[str, Any]]] = {}

    def build(self, request: BuildRequest, log: Log) -> BuildResult:
        """Plan the image: hash every layer stream (a read of the context) and assemble the config."""
        started = time.monotonic()
        with open(os.path.join(request.context, request.dockerfile)) as f:
            recipe = parse_dockerfile(f.read())
        base_config, base_layers = self._base_image(recipe.base)
        layers = [*base_layers, *(_hash_layer(request.context, layer, log) for layer in recipe.layers)]
        config = image_config(recipe, base_config, [layer.digest for layer in layers])
        config_bytes = json.dumps(config, sort_keys=True).encode()
        image_id = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
        self._built[request.tag] = (request.context, recipe, layers, config)
        return BuildResult(
            self.name,
            request.tag,
            image_id,
            sum(layer.size for layer in layers),
            time.monotonic() - started,
            tuple(layers),
        )

    def push(self, request: PushRequest, log: Log) -> PushResult:
        """Upload the layers and config the registry lacks, then the manifest; only images this builder built in
        this run can be pushed."""
        if request.image not in self._built:
            raise UserInputError(
                f"the oci builder pushes images it assembled in this run; {request.image!r} is not one"
            )
        started = time.monotonic()
        context, recipe, layers, config = self._built[request.image]
        repository, tag = split_target(request.target)
        host = registry_host(request.target)
        client = RegistryClient(host, repository.removeprefix(f"{host}/"), request.username, request.password)
        base_count = len(layers) - len(recipe.layers)
        name = repository.removeprefix(f"{host}/")
        missing = [layer for layer in layers if not _present(client, host, name, layer.digest)]
        pushed = 0
        if any(layer in missing for layer in layers[:base_count]):
            pushed += self._push_base_layers(client, recipe.base, layers[:base_count], log)
        for layer, copy in zip(layers[base_count:], recipe.layers, strict=True):
            if layer in missing:
                log(f"uploading {layer.created_by} ({layer.size / 1e6:.1f} MB, uncompressed)")
                pushed += _upload_checked(client, _rechunk(layer_tar(context, copy)), layer.digest)
        config_digest = client.upload_bytes(json.dumps(config, sort_keys=True).encode())
        manifest = _manifest(config_digest, len(json.dumps(config, sort_keys=True).encode()), layers)
        digest = client.put_manifest(tag, manifest, MANIFEST_TYPE)
        remember_blobs(host, name, [layer.digest for layer in layers] + [config_digest])
        return PushResult(
            self.name, request.target, digest, time.monotonic() - started, 1, pushed, len(layers) - len(missing)
        )

    def _base_image(self, reference: str) -> tuple[dict[str, Any], list[Layer]]:
        import docker.errors

        try:
            info = self._engine.api.inspect_image(reference)
        except docker.errors.ImageNotFound:
            raise UserInputError(
                f"base image {reference!r} is not in the Docker engine; run `packager base-image`"
            ) from None
        history = [
            {"created_by": h.get("CreatedBy", ""), "created": "1980-01-01T00:00:00Z"}
            for h in reversed(self._engine.api.history(reference))
        ]
        config = {
            "config": info.get("Config") or {},
            "architecture": info.get("Architecture", "amd64"),
            "os": info.get("Os", "linux"),
            "history": history,
        }
        sizes = {layer.digest: layer.size for layer in self._engine.layers(reference)}
        return config, [Layer(d, sizes.get(d, 0), "base image") for d in info["RootFS"]["Layers"]]

    def _push_base_layers(self, client: RegistryClient, reference: str, layers: list[Layer], log: Log) -> int:
        """Upload the base image's layers as `docker save` gives them (uncompressed tars, digest = diff id)."""
        log(f"uploading the layers of {reference} (once per registry)")
        wanted, pushed = {layer.digest for layer in layers}, 0
        stream = _ReadableStream(self._engine.client.images.get(reference).save(chunk_size=CHUNK_BYTES))
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if member.name.endswith("layer.tar"):
                    member_file = archive.extractfile(member)
                    digest, size = client.upload(iter(lambda f=member_file: f.read(CHUNK_BYTES), b""))
                    if digest not in wanted:
                        raise RegistryError(f"base image layer {digest} does not match the engine's diff ids")
                    pushed += size
        return pushed


def _present(client: RegistryClient, host: str, repository: str, digest: str) -> bool:
    """The repository has the blob, or now does: mounted from another repository packager pushed it to."""
    if client.blob_exists(digest):
        return True
    source = source_repository(host, digest, repository)
    return source is not None and client.mount_blob(digest, source)


def _hash_layer(context: str, copy, log: Log) -> Layer:
    digest, size = hashlib.sha256(), 0
    for block in layer_tar(context, copy):
        digest.update(block)
        size += len(block)
    return Layer(f"sha256:{digest.hexdigest()}", size, " ".join(copy.sources))


def _upload_checked(client: RegistryClient, chunks: Iterable[bytes], expected: str) -> int:
    digest, size = client.upload(chunks)
    if digest != expected:
        raise EngineError(f"a layer changed between build and push ({expected} -> {digest}); rebuild")
    return size


def _rechunk(blocks: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    pending, length = [], 0
    for block in blocks:
        pending.append(block)
        length += len(block)
        if length >= size:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


def _manifest(config_digest: str, config_size: int, layers: list[Layer]) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    return json.dumps(manifest, sort_keys=True).encode()


class _ReadableStream:
    """A file-like view of an iterator of byte chunks (for tarfile's streaming mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks, self._chunk, self._position = iter(chunks), memoryview(b""), 0

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (everything left when `n` < 0); fewer only at the end of the stream."""
        parts = []
        while n != 0:
            if self._position >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._position = memoryview(chunk), 0
            available = len(self._chunk) - self._position
            take = available if n < 0 else min(n, available)
            parts.append(self._chunk[self._position : self._position + take])
            self._position += take
            n = n - take if n > 0 else n
        return b"".join(parts)
