"""Write into a hidden folder next to the target and rename at the end: no half-written outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from packager.errors import OutputError


def check_target(target: str, force: bool) -> None:
    """Refuse an existing output unless --force; refuse a missing parent folder."""
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise OutputError(f"output folder's parent {parent} does not exist; create it first")
    if os.path.exists(target) and not force:
        raise OutputError(f"output {target} already exists; remove it or pass --force to replace it")


def check_free_space(target: str, needed_bytes: int) -> None:
    """Refuse when the disk holding `target` has less free space than `needed_bytes` plus a small margin."""
    parent = os.path.dirname(os.path.abspath(target))
    free = shutil.disk_usage(parent).free
    if needed_bytes * 1.02 + (64 << 20) > free:
        raise OutputError(
            f"not enough disk space in {parent}: need {needed_bytes / 1e9:.2f} GB, {free / 1e9:.2f} GB free; "
            "free some space or choose another --output"
        )


@contextlib.contextmanager
def staged_directory(target: str, force: bool = False) -> Iterator[str]:
    """Yield a temp folder beside `target`; on success it becomes `target`, on any failure it is removed."""
    check_target(target, force)
    target = os.path.abspath(target)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=os.path.dirname(target))
    os.chmod(staging, 0o755)
    try:
        yield staging
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: str, target: str) -> None:
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    old = f"{staging}.old"
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)
