"""Where packager has pushed each blob, per registry: so a push to a new repository mounts the layers another
repository of the same registry already holds (the distribution API's cross-repository mount) instead of sending
them again, as `docker push` does. A hint only: a blob gone from its repository is simply uploaded."""

from __future__ import annotations

import json
import os
import tempfile

from packager.io.hashing import cache_root

MAX_PER_REGISTRY = 10_000  # the newest are kept: an old hint is worth little


def _path() -> str:
    return os.path.join(cache_root(), "blob-locations.json")


def _load() -> dict[str, dict[str, str]]:
    try:
        with open(_path()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _known(data: dict, registry: str) -> dict[str, str]:
    known = data.get(registry)
    return known if isinstance(known, dict) else {}


def source_repository(registry: str, digest: str, target: str) -> str | None:
    """A repository on `registry`, other than `target`, that a packager push left `digest` in; None if unknown."""
    repository = _known(_load(), registry).get(digest)
    return repository if isinstance(repository, str) and repository != target else None


def remember_blobs(registry: str, repository: str, digests: list[str]) -> None:
    """Record that `repository` on `registry` now holds `digests` (atomically; the newest hints win)."""
    data = _load()
    known = {k: v for k, v in _known(data, registry).items() if k not in digests}
    known.update(dict.fromkeys(digests, repository))
    data[registry] = dict(list(known.items())[-MAX_PER_REGISTRY:])
    os.makedirs(os.path.dirname(_path()), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(_path()))
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, _path())
