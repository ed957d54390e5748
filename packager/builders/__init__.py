"""The builder registry: each builder lives in its own module behind the `Builder` protocol (builders.base);
only this function knows them all, so no builder imports another through the registry."""

from __future__ import annotations

from packager.builders.base import Builder
from packager.errors import UserInputError

BUILDERS = ("docker", "buildah", "oci")


def get_builder(name: str, engine_url: str | None = None) -> Builder:
    """The builder called `name`: docker (Engine API through the SDK) or buildah (daemonless, uncompressed push)."""
    if name == "docker":
        from packager.builders.docker import DockerBuilder

        return DockerBuilder(engine_url)
    if name == "buildah":
        from packager.builders.buildah import BuildahBuilder

        return BuildahBuilder(engine_url)
    if name == "oci":
        from packager.builders.oci import OciBuilder

        return OciBuilder(engine_url)
    raise UserInputError(f"unknown builder {name!r}; use one of {', '.join(BUILDERS)}")
