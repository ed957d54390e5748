"""Pickled weights (.bin/.pt), loaded only when the user allowed them, and then restricted to tensors."""

from __future__ import annotations

import torch

from packager.errors import AdapterError


def load_pickle_state(path: str) -> dict[str, torch.Tensor]:
    """Load a pickle state dict restricted to tensors (weights_only=True); only called when allowed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a bad pickle
        raise AdapterError(
            f"{path} could not be loaded as a weights-only state dict ({exc.__class__.__name__})"
        ) from None
    return state
