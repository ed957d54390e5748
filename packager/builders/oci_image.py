"""Assemble an image straight from a rendered build context: the Dockerfiles packager renders use a small,
fixed instruction set (FROM, COPY --chown, ENV, LABEL, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT), so each COPY
becomes one uncompressed layer tar streamed from the context, and the rest becomes the image config.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import Any

from packager.image.dockerfile import CopyLayer, ImageRecipe
from packager.image.paths import FIXED_MTIME

READ_BYTES = 16 << 20


def layer_entries(context: str, layer: CopyLayer) -> list[tuple[str, str | None]]:
    """(path in the image, file in the context or None for a directory), parents first, sorted."""
    entries: dict[str, str | None] = {}
    destination = layer.destination.strip("/")
    if destination:  # COPY into "/" adds no entry for the root itself
        _add_parents(entries, destination)
        entries[destination] = None
    for source in layer.sources:
        full = os.path.join(context, source)
        if os.path.isdir(full):
            for folder, dirs, files in os.walk(full):
                dirs.sort()
                base = _join(destination, os.path.relpath(folder, full))
                if base:
                    entries[base] = None
                entries.update({_join(base, n): os.path.join(folder, n) for n in sorted(files)})
        else:
            entries[_join(destination, os.path.basename(source))] = full
    return sorted(entries.items())


def _join(folder: str, name: str) -> str:
    if name == ".":
        return folder
    return f"{folder}/{name}" if folder else name


def _add_parents(entries: dict[str, str | None], path: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        entries.setdefault("/".join(parts[:i]), None)


def layer_tar(context: str, layer: CopyLayer) -> Iterator[bytes]:
    """The layer as an uncompressed tar stream: fixed mtimes, the COPY's owner, parents owned by root."""
    for name, source in layer_entries(context, layer):
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid = FIXED_MTIME, layer.uid, layer.gid
        if source is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            if not name.startswith(layer.destination.strip("/")):
                info.uid = info.gid = 0
            yield info.tobuf(tarfile.PAX_FORMAT)
            continue
        info.size, info.mode = os.path.getsize(source), 0o644
        yield info.tobuf(tarfile.PAX_FORMAT)
        yield from _file_blocks(source, info.size)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _file_blocks(path: str, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(READ_BYTES), b"")
    if size % tarfile.BLOCKSIZE:
        yield b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def image_config(recipe: ImageRecipe, base_config: dict[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """The OCI image config: the base's settings with the recipe's applied on top."""
    config = dict(base_config.get("config") or {})
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    env.update(recipe.env)
    config.update(
        Env=[f"{k}={v}" for k, v in env.items()],
        Labels={**(config.get("Labels") or {}), **recipe.labels},
        User=recipe.user,
        ExposedPorts={p: {} for p in recipe.exposed},
        Entrypoint=recipe.entrypoint,
        Cmd=recipe.cmd,
    )
    if recipe.healthcheck:
        config["Healthcheck"] = recipe.healthcheck
    history = list(base_config.get("history") or [])
    history += [
        {"created": "1980-01-01T00:00:00Z", "created_by": f"COPY {' '.join(layer.sources)}"} for layer in recipe.layers
    ]
    return {
        "architecture": base_config.get("architecture", "amd64"),
        "os": base_config.get("os", "linux"),
        "created": "1980-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
