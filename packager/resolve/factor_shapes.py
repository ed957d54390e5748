"""Shape checks of adapter factors against the base weight they update, before any weight is read."""

from __future__ import annotations

from packager.errors import IncompatibleAdapterError


def check_lora_shapes(module: str, kind: str, weight: tuple, a: tuple, b: tuple, rank: int) -> None:
    """Refuse LoRA factors whose rank or shapes do not fit the base weight (Conv1D and embeddings stored (in, out))."""
    if kind == "embedding" or kind == "conv1d":
        expected_a, expected_b = (rank, weight[0]), (weight[1], rank)
    else:
        expected_a, expected_b = (rank, weight[1]), (weight[0], rank)
    if a[0] != rank:
        raise IncompatibleAdapterError(
            f"adapter config gives {module} rank {rank} but its lora_A has rank {a[0]}; "
            "fix r/rank_pattern in adapter_config.json"
        )
    if tuple(a) != expected_a or tuple(b) != expected_b:
        raise IncompatibleAdapterError(
            f"adapter LoRA for {module} has A {list(a)} and B {list(b)}, which do not fit the base weight "
            f"{list(weight)}; the adapter was trained on another base: pass the right --base"
        )


def check_ia3_shape(module: str, kind: str, weight: tuple, vector: tuple, feedforward: bool) -> None:
    """Refuse an (IA)3 vector that does not fit the weight: (out, 1), or (1, in) for a feed-forward module."""
    rows, cols = weight[::-1] if kind == "conv1d" else weight
    if tuple(vector) != ((1, cols) if feedforward else (rows, 1)):
        raise IncompatibleAdapterError(
            f"adapter (IA)3 vector for {module} has shape {list(vector)}, which does not fit the base weight "
            f"{list(weight)}; the adapter was trained on another base: pass the right --base"
        )
