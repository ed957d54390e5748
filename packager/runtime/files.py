"""The small JSON files a model folder carries (config.json, modules.json, a pooling config), read leniently:
the runtime and packager's own readers share this one reader."""

from __future__ import annotations

import json
from typing import Any


def read_json(path: str) -> Any:
    """The JSON at `path`, or None when it is absent or unreadable (callers check the shape they need)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
