"""What several commands share."""

from __future__ import annotations


def hash_base_ahead(adapter: str, base: str | None, checkpoint: int | None = None) -> None:
    """Hash a local base's weight files on the second core while torch is imported (one core sits idle for
    about a second then); the merge that follows reads them without hashing again."""
    from packager.io.hashing import hash_ahead
    from packager.resolve.folders import local_base_weight_paths

    hash_ahead(local_base_weight_paths(adapter, base, checkpoint))
