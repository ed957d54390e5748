"""Locate the base model: a local folder, the Hugging Face cache, or the hub when online."""

from __future__ import annotations

import os
from dataclasses import dataclass

from packager.errors import BaseNotFoundError
from packager.model_files import CONFIG_FILES

SIDE_FILES = CONFIG_FILES


@dataclass(frozen=True)
class BaseLocation:
    """Where the base was found and how: `source` is one of local, hf-cache, hub."""

    path: str
    source: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None


def locate_base(hint: str | None, revision: str | None, explicit: bool) -> BaseLocation:
    """Find the base named by `--base` (explicit) or by the adapter config's hint."""
    if not hint:
        raise BaseNotFoundError(
            "the adapter config names no base model (base_model_name_or_path is empty); pass --base PATH|HUB_ID"
        )
    if os.path.isdir(hint):
        return BaseLocation(os.path.abspath(hint), "local")
    where = "--base" if explicit else "the adapter config"
    if os.path.isabs(hint) or hint.startswith((".", "~")) or hint.count("/") > 1:
        raise BaseNotFoundError(
            f"base {hint!r} (from {where}) is a local path that does not exist on this machine; "
            "pass --base with the base model's folder or hub id"
        )
    cached = _from_hf_cache(hint, revision)
    if cached:
        return cached
    if _hub_online():
        return _from_hub(hint, revision)
    raise BaseNotFoundError(
        f"base {hint!r} (from {where}) is not a local folder and not in the Hugging Face cache at "
        f"{_hf_cache_dir()} (revision {revision or 'main'}), and the hub is offline; download it or pass --base PATH"
    )


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_online() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE


def _from_hf_cache(repo_id: str, revision: str | None) -> BaseLocation | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return BaseLocation(path, "hf-cache", repo_id, revision, os.path.basename(path))


def _from_hub(repo_id: str, revision: str | None) -> BaseLocation:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except (HfHubHTTPError, OSError) as exc:
        raise BaseNotFoundError(
            f"base {repo_id!r} could not be downloaded ({exc.__class__.__name__}); check the id, "
            "log in with `huggingface-cli login` for gated models, or pass --base PATH"
        ) from None
    return BaseLocation(path, "hub", repo_id, revision, os.path.basename(path))
