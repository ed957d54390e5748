"""What several commands share."""

from __future__ import annotations

import argparse


def add_qlora_flags(p: argparse.ArgumentParser) -> None:
    """--qlora and --qlora-merge, for every command that merges."""
    p.add_argument(
        "--qlora",
        action="store_true",
        help="the adapter was trained with QLoRA on a 4-bit base (detected from the base's name or config otherwise)",
    )
    p.add_argument(
        "--qlora-merge",
        choices=["w16", "simulate-nf4"],
        help="QLoRA adapters: merge onto the 16-bit weights (w16, the default) or onto the weights rounded through "
        "bitsandbytes nf4 as training saw them (simulate-nf4)",
    )


def add_task_flag(p: argparse.ArgumentParser) -> None:
    """--task, for every command that builds the model."""
    from packager.tasks import TASKS

    p.add_argument(
        "--task",
        type=str.upper,
        choices=list(TASKS),
        help="the model class to build (default: the adapter's task_type, else the base's architecture): "
        + "; ".join(f"{name} = {auto} ({what})" for name, (auto, what) in TASKS.items()),
    )


def hash_base_ahead(adapter: str, base: str | None, checkpoint: int | None = None) -> None:
    """Hash a local base's weight files on the second core while torch is imported (one core sits idle for
    about a second then); the merge that follows reads them without hashing again."""
    from packager.io.hashing import hash_ahead
    from packager.resolve.folders import local_base_weight_paths

    hash_ahead(local_base_weight_paths(adapter, base, checkpoint))


def parse_size(text: str) -> int:
    """A size flag: `500MB`, `5GB`, `2GiB` or plain bytes."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(upper[: -len(unit)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500MB or 5GB")
