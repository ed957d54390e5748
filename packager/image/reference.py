"""Image references: split a target into repository and tag, and find the registry it names."""

from __future__ import annotations


def split_target(target: str) -> tuple[str, str]:
    """`host:5000/team/model:1` -> (`host:5000/team/model`, `1`); no tag means `latest`."""
    repository, _, tag = target.rpartition(":") if ":" in target.rsplit("/", 1)[-1] else (target, "", "latest")
    return repository, tag


def registry_host(target: str) -> str:
    """The registry a target names (its first path part when that looks like a host), else docker.io."""
    first = target.split("/", 1)[0]
    return first if "/" in target and ("." in first or ":" in first or first == "localhost") else "docker.io"
