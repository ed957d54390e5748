"""Reading what the user brings: one module per adapter format, each turning a folder into the one `Adapter` the
planner takes (formats/adapter.py). The registry below is the list `read_adapter` tries; a new format is one
module with a `read(path, checkpoint, allow_pickle)` that returns None for a folder that is not its own, and one
`register_format(...)` line, and the planner does not change."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packager.registry import Registry

if TYPE_CHECKING:  # the readers import torch; the CLI's torch-free lookups import formats.folders alone
    from packager.formats.adapter import Adapter


@dataclass(frozen=True)
class AdapterFormat:
    """One adapter format: its reader (`module:function`, imported on first use) and whether it is the last resort
    (PEFT: the folder the others are converted into; its reader refuses what it cannot read instead of None)."""

    name: str
    reader: str
    fallback: bool = False


FORMATS: Registry[AdapterFormat] = Registry("adapter format")  # tried in registration order, the fallback last
register_format = FORMATS.register


def read_adapter(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter:
    """The adapter at `path`, whichever format wrote it: a LitGPT run, an AdapterHub save, else a PEFT folder (or
    a trainer's checkpoint-N of any of them)."""
    ordered = sorted(FORMATS.values(), key=lambda entry: entry.fallback)
    for entry in ordered:
        module, _, function = entry.reader.partition(":")
        adapter = getattr(importlib.import_module(module), function)(path, checkpoint, allow_pickle)
        if adapter is not None:
            return adapter
    raise AssertionError("the fallback format reads or refuses every folder")


for _entry in (
    AdapterFormat("litgpt", "packager.formats.litgpt:read"),
    AdapterFormat("adapterhub", "packager.formats.adapterhub:read"),
    AdapterFormat("peft", "packager.formats.peft:read", fallback=True),
):
    register_format(_entry)
