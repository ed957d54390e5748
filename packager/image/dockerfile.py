"""The one Dockerfile parser: packager's templates use a small, fixed instruction set (FROM, COPY --chown, ENV,
LABEL, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT, CMD); the oci builder assembles images from it, and the report and the
buildah builder read layers and the base image from it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from packager.errors import EngineError


@dataclass(frozen=True)
class CopyLayer:
    """One COPY instruction: source paths in the context, the destination, and the --chown owner."""

    sources: tuple[str, ...]  # relative to the context
    destination: str
    uid: int = 0
    gid: int = 0


@dataclass
class ImageRecipe:
    """A parsed Dockerfile: the base image, the COPY layers, and the image config (env, labels, user, ports,
    healthcheck, entrypoint)."""

    base: str = ""
    layers: list[CopyLayer] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""
    exposed: list[str] = field(default_factory=list)
    healthcheck: dict[str, Any] | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] | None = None


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
    "CMD": lambda r, rest: setattr(r, "cmd", json.loads(rest)),
}
