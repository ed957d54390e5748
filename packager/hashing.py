"""sha256 of files, remembered per (device, inode, size, mtime) so a re-run does not re-read gigabytes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

CHUNK = 16 << 20


def _cache_path() -> str:
    root = os.environ.get("PACKAGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "packager")
    return os.path.join(root, "sha256.json")


def _stamp(path: str) -> str:
    st = os.stat(path)  # identity survives a rename (staging folder -> output)
    return f"{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"


def _load() -> dict[str, str]:
    try:
        with open(_cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def remember(path: str, digest: str) -> None:
    """Record a digest computed elsewhere (e.g. while streaming the file)."""
    cache = _load()
    cache[_stamp(path)] = digest
    target = _cache_path()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target))
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f)
    os.replace(tmp, target)


def cached_sha256(path: str) -> str | None:
    return _load().get(_stamp(path))


def sha256_file(path: str) -> str:
    """The file's sha256, from the cache when the file is unchanged; a Hugging Face cache blob is named by it."""
    known = cached_sha256(path) or _hf_blob_digest(path)
    if known:
        return known
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    remember(path, digest.hexdigest())
    return digest.hexdigest()


def _hf_blob_digest(path: str) -> str | None:
    """Hub LFS files sit in the cache as blobs/<sha256>; trust the name only for such blobs."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    parent = os.path.basename(os.path.dirname(real))
    if parent == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return None
