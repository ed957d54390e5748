"""Where adapters and bases keep their files: lookups that need neither torch nor the weights.

Kept free of heavy imports so the CLI can find the base's weight files (and start hashing them) while
torch is still being imported.
"""

from __future__ import annotations

import json
import os
import re

from packager.errors import AdapterError, PackagerError
from packager.model_files import ADAPTER_CONFIG

CONFIG_FILE = ADAPTER_CONFIG
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"


def find_adapter(path: str, checkpoint: int | None = None) -> tuple[str, int | None]:
    """Return the folder holding adapter_config.json: `path` itself or its newest (or chosen) checkpoint-N."""
    if not os.path.isdir(path):
        raise AdapterError(f"adapter folder {path} does not exist; pass the folder that holds {CONFIG_FILE}")
    checkpoints = _checkpoints(path)
    if checkpoint is not None:
        if checkpoint not in checkpoints:
            found = ", ".join(str(n) for n in sorted(checkpoints)) or "none"
            raise AdapterError(f"{path} has no checkpoint-{checkpoint} (found: {found}); pick one of those")
        return checkpoints[checkpoint], checkpoint
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return path, None
    if checkpoints:
        newest = max(checkpoints)
        return checkpoints[newest], newest
    raise AdapterError(
        f"{path} holds no {CONFIG_FILE} and no checkpoint-N folder; pass a PEFT adapter folder "
        "(saved with save_pretrained), a training output folder, or a LitGPT finetune_lora output folder"
    )


def _checkpoints(path: str) -> dict[int, str]:
    found = {}
    for name in os.listdir(path):
        match = CHECKPOINT_DIR.match(name)
        sub = os.path.join(path, name)
        if match and os.path.isfile(os.path.join(sub, CONFIG_FILE)):
            found[int(match.group(1))] = sub
    return found


def safetensors_files(path: str) -> list[str]:
    """A model folder's safetensors weight files: those its index names, else every *.safetensors but adapters."""
    index = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return sorted(n for n in os.listdir(path) if n.endswith(".safetensors") and not n.startswith("adapter_"))


def pickle_files(path: str) -> list[str]:
    """A model folder's pickle weight files: those its index names, else every pytorch_model*.bin."""
    index = os.path.join(path, PICKLE_INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return sorted(n for n in os.listdir(path) if n.startswith("pytorch_model") and n.endswith(".bin"))


def parse_adapter_arg(value: str) -> tuple[str, str]:
    """`NAME=PATH` or `PATH` (the name is then the folder's name, made safe)."""
    if "=" in value and not os.path.exists(value):
        name, path = value.split("=", 1)
    else:
        path = value
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(os.path.normpath(value))).strip("-.") or "adapter"
    return name, path


def local_base_weight_paths(adapter: str, base: str | None, checkpoint: int | None = None) -> list[str]:
    """A cheap guess at the base's local safetensors files, in the order a merge reads them; [] when unsure.

    Only a hint for hashing ahead: resolve decides which files are really used, and reports bad input.
    """
    try:
        if base is None:
            folder, _ = find_adapter(adapter, checkpoint)
            with open(os.path.join(folder, CONFIG_FILE)) as f:
                base = json.load(f).get("base_model_name_or_path")
        if not isinstance(base, str) or not os.path.isdir(base):
            return []
        return [os.path.join(base, name) for name in safetensors_files(base)]
    except (PackagerError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
