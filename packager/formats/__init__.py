"""Reading what the user brings: one module per adapter format, each turning a folder into the one `Adapter` the
planner takes (formats/adapter.py). Only `read_adapter` knows them all; a new format is one module here and one
line below, and the planner does not change."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the readers import torch; the CLI's torch-free lookups import formats.folders alone
    from packager.formats.adapter import Adapter

# tried in this order; PEFT last, as the folder the others are converted into
FORMATS = ("litgpt", "adapterhub", "peft")


def read_adapter(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter:
    """The adapter at `path`, whichever format wrote it: a LitGPT run, an AdapterHub save, else a PEFT folder (or
    a trainer's checkpoint-N of any of them)."""
    from packager.formats.adapterhub import read as read_adapterhub
    from packager.formats.litgpt import read as read_litgpt
    from packager.formats.peft import read as read_peft

    for reader in (read_litgpt, read_adapterhub):
        adapter = reader(path, checkpoint, allow_pickle)
        if adapter is not None:
            return adapter
    return read_peft(path, checkpoint, allow_pickle)
