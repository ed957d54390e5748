"""Check that the base mounted into a shared-layout image is the one the adapters were packaged against.

Every file in the lock's `base.files` must exist with the locked size. Files with a `sample_sha256` (weights)
are compared by that sampled hash in quick mode and by full sha256 in full mode; all other files (config,
tokenizer, index) are always compared by full sha256. Mode off skips the check with a warning.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from .fingerprint import full_sha256, sample_sha256


class BaseMismatch(Exception):
    """The mounted base is absent or differs from the lock (message: one line)."""


def load_lock(path: str) -> dict[str, Any]:
    """Read the packager lock; a missing or broken lock is a BaseMismatch (nothing to verify against)."""
    try:
        with open(path) as f:
            lock = json.load(f)
    except (OSError, ValueError) as exc:
        raise BaseMismatch(f"cannot read the lock {path} to verify the base: {exc}") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("base"), dict):
        raise BaseMismatch(f"the lock {path} has no `base` section to verify the mounted base against")
    return lock


def verify_base(base_dir: str, lock: dict[str, Any], mode: str = "quick", out: TextIO | None = None) -> None:
    """Raise BaseMismatch unless `base_dir` holds the lock's base files (mode: quick | full | off)."""
    if mode == "off":
        print(
            f"warning: base verification is off; the base at {base_dir} is NOT checked against the lock",
            file=out or sys.stderr,
        )
        return
    if mode not in ("quick", "full"):
        raise ValueError(f"verify mode must be quick, full or off, got {mode!r}")
    if not os.path.isdir(base_dir) or not os.listdir(base_dir):
        raise BaseMismatch(
            f"no base model mounted at {base_dir}; mount the base the adapters were trained on (read-only) "
            f"at {base_dir}"
        )
    base = lock.get("base") or {}
    files = base.get("files") or []
    if not files:
        raise BaseMismatch("the lock lists no base files, so the mounted base cannot be verified")
    for entry in files:
        try:
            problem = _check_file(base_dir, entry, mode)
        except PermissionError:
            raise BaseMismatch(
                f"cannot read {entry.get('path')} in the base mounted at {base_dir} as uid {os.getuid()}; "
                "make the base readable by everyone (chmod -R a+rX) and mount it again"
            ) from None
        if problem:
            raise BaseMismatch(
                f"the base mounted at {base_dir} is not the one in the lock: {problem}; expected {describe_base(base)}"
            )


def describe_base(base: dict[str, Any]) -> str:
    """A short name for the locked base: model type, architectures, and where it came from."""
    fp = base.get("fingerprint") or {}
    kind = fp.get("model_type") or "unknown model type"
    archs = ", ".join(fp.get("architectures") or ())
    what = f"{kind} ({archs})" if archs else kind
    origin = base.get("repo_id") or base.get("path")
    if origin and base.get("commit"):
        origin = f"{origin}@{base['commit'][:12]}"
    elif origin and base.get("revision"):
        origin = f"{origin}@{base['revision']}"
    return f"{what} from {origin}" if origin else what


def _check_file(base_dir: str, entry: dict[str, Any], mode: str) -> str | None:
    """Why this locked file does not match, or None."""
    name = str(entry.get("path", ""))
    path = os.path.normpath(os.path.join(base_dir, name))
    if not name or os.path.isabs(name) or not path.startswith(os.path.normpath(base_dir) + os.sep):
        return f"the lock names an invalid base file {name!r}"
    if not os.path.isfile(path):
        return f"{name} is missing"
    size = os.path.getsize(path)
    if entry.get("size") is not None and size != entry["size"]:
        return f"{name} has {size} bytes, the lock expects {entry['size']}"
    kind, expected = _expected_hash(entry, mode)
    if expected is None:
        return None
    actual = sample_sha256(path) if kind == "sample sha256" else full_sha256(path)
    if actual != expected:
        return f"{name} has different content ({kind} {actual[:12]}…, the lock expects {expected[:12]}…)"
    return None


def _expected_hash(entry: dict[str, Any], mode: str) -> tuple[str, str | None]:
    """Which hash to compare: sample for weights in quick mode, else full (falling back to what the lock has)."""
    sample, full = entry.get("sample_sha256"), entry.get("sha256")
    if sample and (mode == "quick" or not full):
        return "sample sha256", sample
    return "sha256", full
