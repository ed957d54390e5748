"""What every extension point's registry is: entries by name, each registered once (as vLLM keeps its quantization
methods). The vocabularies live with their stages: quantization schemes (quantize/schemes.py), builders
(builders/__init__.py), deploy targets (deploy/targets.py), adapter formats (formats/__init__.py)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

Entry = TypeVar("Entry")


class Registry(dict[str, Entry], Generic[Entry]):
    """Entries by their `name`, in registration order; a name taken (or reserved, such as `auto`) is refused."""

    def __init__(self, what: str, reserved: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.what, self.reserved = what, reserved

    def register(self, entry: Any) -> Any:
        """Add `entry` under `entry.name`; returns it."""
        if entry.name in self or entry.name in self.reserved:
            raise ValueError(f"a {self.what} named {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry
