"""runtime.json's `batching` object: how much one forward pass of packager's server takes and how many requests
may wait for a place (the plan sizes them from the memory it gives the container). Torch-free: packager writes
it at package time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config_errors import ConfigError


@dataclass(frozen=True)
class BatchLimits:
    """Rows per forward pass; prompt plus completion tokens of all of them; requests waiting (beyond: HTTP 429)."""

    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_queue: int = 256

    def to_json(self) -> dict[str, int]:
        """The runtime.json object."""
        return asdict(self)


def parse_batching(value: Any) -> BatchLimits:
    """Validate runtime.json's `batching`: an object of positive integers, each key optional."""
    keys = set(BatchLimits.__dataclass_fields__)
    if not isinstance(value, dict) or set(value) - keys:
        raise ConfigError(f"runtime config: batching must be an object with keys among {', '.join(sorted(keys))}")
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ConfigError(f"runtime config: batching.{key} must be a positive integer, got {number!r}")
    return BatchLimits(**value)
