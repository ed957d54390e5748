"""Which pushed base-model image holds a base: `packager package-base` records every image it pushes, keyed by
the base's pinned files, so a later shared-layout `package` of an adapter on that base finds the image (and its
digest) by itself and writes it into the lock, the labels and the manifests.

A record is only a hint where to find the bytes: the key is the sha256 of every base file, so a record can only
match the very same files, and the image's start-up check still verifies the mounted base against the lock.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass

from packager.errors import UserInputError
from packager.image.filters import image_ref
from packager.io.hashing import cache_root
from packager.plan import FileEntry, files_key

PINNED_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelImageRecord:
    """A pushed base-model image: where it is (pinned by digest), and the base it holds."""

    reference: str  # registry/repo@sha256:...
    tag: str  # registry/repo:tag as pushed
    base_id: str
    files_key: str  # of the base as resolved: what a shared package looks the record up by
    files: tuple[dict, ...] = ()  # the image's files when they differ (a split base): what pods get mounted


def _folder() -> str:
    return os.path.join(cache_root(), "model-images")


def remember_model_image(record: ModelImageRecord) -> str:
    """Write the record (atomically); returns its path."""
    os.makedirs(_folder(), exist_ok=True)
    path = os.path.join(_folder(), f"{record.files_key}.json")
    fd, tmp = tempfile.mkstemp(dir=_folder())
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def find_model_image(files: tuple[FileEntry, ...], key: str | None = None) -> ModelImageRecord | None:
    """The record of a pushed image holding exactly these base files (or what `key` names: these files
    quantized), or None."""
    if any(not f.sha256 for f in files):
        return None
    key = key or files_key(files)
    try:
        with open(os.path.join(_folder(), f"{key}.json")) as f:
            data = json.load(f)
        record = ModelImageRecord(**{**data, "files": tuple(data.get("files") or ())})
    except (OSError, ValueError, TypeError):
        return None
    return record if PINNED_REF.fullmatch(record.reference) and record.files_key == key else None


def pinned_reference(value: str) -> str:
    """A `--base-model-image` given by hand: it must name its digest, or the manifests would not be pinned."""
    if not PINNED_REF.fullmatch(value or ""):
        raise UserInputError(
            f"--base-model-image {value!r} is not pinned by digest; give it as REGISTRY/REPO@sha256:<64 hex> "
            "(what `packager package-base` prints)"
        )
    return image_ref(value)  # the grammar the manifests check: refused here, before the merge, not at render


def model_image_for(explicit: str | None, files: tuple[FileEntry, ...]) -> tuple[str, tuple[FileEntry, ...]]:
    """The base-model image a shared image runs beside and the files it mounts: the one named (with `files`),
    else the one `package-base` pushed for exactly these base files (with the split files it holds, if it split
    any), else ("", files): the base then comes from a host folder or a volume."""
    if explicit:
        return pinned_reference(explicit), files
    record = find_model_image(files)
    if record is None:
        return "", files
    return record.reference, tuple(FileEntry(**f) for f in record.files) or files
