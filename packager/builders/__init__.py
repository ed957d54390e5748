"""The builder registry: every builder by name, looked up here and nowhere else. Each lives in its own module
behind the `Builder` protocol (builders.base), imported only when it is used, so the CLI lists the choices
without importing an engine's SDK. The CLI's choices and help, the request's check, `auto`, the plan's
`reproducible` and the reports all read the entries below.

A new builder is one module with its class and one `register_builder(...)` line (here, or in a test).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from packager.builders.base import Builder
from packager.errors import UserInputError
from packager.registry import Registry


@dataclass(frozen=True)
class BuilderEntry:
    """A builder's name, where its class lives (`module:Class`, imported on first use) and what it promises."""

    name: str
    target: str
    describe: str  # one line for --help
    reproducible: bool  # the same inputs give the same image digest
    local_image: bool  # leaves an image a local engine runs (else: assembled from the context, pushed from it)


BUILDERS: Registry[BuilderEntry] = Registry("builder", reserved=("auto",))
AUTO_PUSH = "oci"  # `auto` when pushing: layers straight from the context, the fast path
AUTO_LOCAL = "docker"  # `auto` otherwise: a local image you can run


register_builder = BUILDERS.register


def builder_entry(name: str) -> BuilderEntry:
    """The registered builder called `name`; an unknown name is refused naming the choices."""
    if name not in BUILDERS:
        raise UserInputError(f"unknown builder {name!r}; use one of {', '.join(('auto', *BUILDERS))}")
    return BUILDERS[name]


def choose_builder(requested: str, push: bool) -> str:
    """auto: `oci` when pushing (uncompressed layers straight from the context: the fast path), else `docker`
    (a local image you can run); any other name as it is, if registered."""
    if requested == "auto":
        return AUTO_PUSH if push else AUTO_LOCAL
    return builder_entry(requested).name


def get_builder(name: str, engine_url: str | None = None) -> Builder:
    """The builder called `name`, made for the engine at `engine_url` (default: its own, e.g. DOCKER_HOST)."""
    module, _, cls = builder_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)(engine_url)


def help_text(auto: bool = True) -> str:
    """--builder's help: auto (or the local default), then each registered builder."""
    each = "; ".join(f"{e.name}: {e.describe}" for e in BUILDERS.values())
    default = f"auto (default): {AUTO_PUSH} with --push, else {AUTO_LOCAL}" if auto else f"default: {AUTO_LOCAL}"
    return f"{default}. {each}"


for _entry in (
    BuilderEntry("docker", "packager.builders.docker:DockerBuilder",
                 "the Engine API (local image, gzip push; not reproducible)", reproducible=False, local_image=True),
    BuilderEntry("buildah", "packager.builders.buildah:BuildahBuilder",
                 "daemonless, fixed timestamps (reproducible)", reproducible=True, local_image=True),
    BuilderEntry("oci", "packager.builders.oci:OciBuilder",
                 "layers streamed uncompressed from the context to the registry (fastest push, same inputs give "
                 "the same digest, no local image)", reproducible=True, local_image=False),
):  # fmt: skip
    register_builder(_entry)
