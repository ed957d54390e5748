"""PackageRequests for tests and benchmarks: flat field names (as the flags read), each sorted into the part of
the request whose dataclass has that field."""

from __future__ import annotations

import dataclasses
from typing import Any

from packager.planning.request import ImageRequest, Inputs, PackageRequest, Serving

PARTS = {"inputs": Inputs, "serving": Serving, "image": ImageRequest}


def package_request(
    adapters: tuple[tuple[str, str], ...], layout: str, base_image: str, tag: str, **fields: Any
) -> PackageRequest:
    """The request `package` would build from these flags (`fields`: any part's field, by name)."""
    fields = {"adapters": adapters, "layout": layout, "base_image": base_image, "tag": tag, **fields}
    parts = {}
    for part, cls in PARTS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        parts[part] = cls(**{name: fields.pop(name) for name in list(fields) if name in names})
    return PackageRequest(**parts, **fields)  # artefact, deploy, work, verify, quiet: the request's own
