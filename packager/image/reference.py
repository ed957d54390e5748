"""Image references: split a target into repository and tag, and find the registry it names."""

from __future__ import annotations


def split_target(target: str) -> tuple[str, str]:
    """`host:5000/team/model:1` -> (`host:5000/team/model`, `1`); no tag means `latest`."""
    repository, _, tag = target.rpartition(":") if ":" in target.rsplit("/", 1)[-1] else (target, "", "latest")
    return repository, tag


def split_reference(reference: str) -> tuple[str, str]:
    """`host/repo:1` -> (`host/repo`, `1`); `host/repo@sha256:...` -> (`host/repo`, `sha256:...`)."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        return repository, digest
    return split_target(reference)


def names_registry(target: str) -> bool:
    """Whether a reference names its registry (a cluster pulls an unqualified name from Docker Hub)."""
    first = target.split("/", 1)[0]
    return "/" in target and ("." in first or ":" in first or first == "localhost")


PLACEHOLDER_REGISTRY = "registry.invalid"  # RFC 2606: never resolves, so an unset registry fails at the first pull


def cluster_reference(reference: str) -> str:
    """The image as a cluster must name it: qualified by its registry, else by a placeholder that cannot pull."""
    return reference if names_registry(reference) else f"{PLACEHOLDER_REGISTRY}/{reference}"


def registry_host(target: str) -> str:
    """The registry a target names (its first path part when that looks like a host), else docker.io."""
    first = target.split("/", 1)[0]
    return first if "/" in target and ("." in first or ":" in first or first == "localhost") else "docker.io"
