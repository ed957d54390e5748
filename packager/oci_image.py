"""Assemble an image straight from a rendered build context: the Dockerfiles packager renders use a small,
fixed instruction set (FROM, COPY --chown, ENV, LABEL, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT), so each COPY
becomes one uncompressed layer tar streamed from the context, and the rest becomes the image config.
"""

from __future__ import annotations

import json
import os
import shlex
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from packager.errors import EngineError

FIXED_MTIME = 315532800
READ_BYTES = 16 << 20


@dataclass(frozen=True)
class CopyLayer:
    sources: tuple[str, ...]  # relative to the context
    destination: str
    uid: int = 0
    gid: int = 0


@dataclass
class ImageRecipe:
    base: str = ""
    layers: list[CopyLayer] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""
    exposed: list[str] = field(default_factory=list)
    healthcheck: dict[str, Any] | None = None
    entrypoint: list[str] = field(default_factory=list)


def parse_dockerfile(text: str) -> ImageRecipe:
    """Read the instruction subset packager's templates use; anything else is refused."""
    recipe = ImageRecipe()
    for instruction, rest in _instructions(text):
        handler = _HANDLERS.get(instruction)
        if handler is None:
            raise EngineError(f"the oci builder does not support the Dockerfile instruction {instruction}")
        handler(recipe, rest)
    return recipe


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            yield instruction.upper(), rest.strip()


def _copy(recipe: ImageRecipe, rest: str) -> None:
    uid = gid = 0
    if rest.startswith("--chown="):
        owner, _, rest = rest.partition(" ")
        uid_text, _, gid_text = owner.removeprefix("--chown=").partition(":")
        uid, gid = int(uid_text), int(gid_text or uid_text)
    paths = json.loads(rest)
    recipe.layers.append(CopyLayer(tuple(paths[:-1]), paths[-1], uid, gid))


def _pairs(rest: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(rest))


def _healthcheck(recipe: ImageRecipe, rest: str) -> None:
    options, _, command = rest.partition(" CMD ")
    check: dict[str, Any] = {"Test": ["CMD", *json.loads(command)]}
    units = {"s": 10**9, "m": 60 * 10**9}
    names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod", "retries": "Retries"}
    for option in options.split():
        key, _, value = option.removeprefix("--").partition("=")
        check[names[key]] = int(value) if key == "retries" else int(float(value[:-1]) * units[value[-1]])
    recipe.healthcheck = check


_HANDLERS = {
    "FROM": lambda r, rest: setattr(r, "base", rest.split()[0]),
    "COPY": _copy,
    "ENV": lambda r, rest: r.env.update(_pairs(rest)),
    "LABEL": lambda r, rest: r.labels.update(_pairs(rest)),
    "USER": lambda r, rest: setattr(r, "user", rest),
    "EXPOSE": lambda r, rest: r.exposed.extend(p if "/" in p else f"{p}/tcp" for p in rest.split()),
    "HEALTHCHECK": _healthcheck,
    "ENTRYPOINT": lambda r, rest: setattr(r, "entrypoint", json.loads(rest)),
}


def layer_entries(context: str, layer: CopyLayer) -> list[tuple[str, str | None]]:
    """(path in the image, file in the context or None for a directory), parents first, sorted."""
    entries: dict[str, str | None] = {}
    destination = layer.destination.strip("/")
    _add_parents(entries, destination)
    entries[destination] = None
    for source in layer.sources:
        full = os.path.join(context, source)
        if os.path.isdir(full):
            for folder, dirs, files in os.walk(full):
                dirs.sort()
                relative = os.path.relpath(folder, full)
                base = destination if relative == "." else f"{destination}/{relative}"
                entries[base] = None
                entries.update({f"{base}/{n}": os.path.join(folder, n) for n in sorted(files)})
        else:
            entries[f"{destination}/{os.path.basename(source)}"] = full
    return sorted(entries.items())


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
        Cmd=None,
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
