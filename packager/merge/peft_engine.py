"""Fallback merge engine: PEFT's own merge_and_unload, for adapter kinds the streaming merge does not cover.

It holds the whole model in memory, so it is only chosen when needed, and the choice is reported.
"""

from __future__ import annotations

from packager.merge.reference import compute_dtype, load_peft_model
from packager.progress import Progress
from packager.resolve.resolver import Resolved


def merge_with_peft(resolved: Resolved, staging: str, max_shard_bytes: int, progress: Progress) -> None:
    """Load, merge and save with PEFT and transformers into `staging`."""
    progress.note(f"using PEFT merge_and_unload: {resolved.plan.merge.engine_reason}")
    model = load_peft_model(resolved, compute_dtype(resolved)).merge_and_unload()
    model.save_pretrained(staging, safe_serialization=True, max_shard_size=max_shard_bytes)
