"""The frozen plan every step works from: what base, which files, which tensors change and how."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from packager import __version__


@dataclass(frozen=True)
class FileEntry:
    """One input or output file, pinned by size and sha256 (None until hashed)."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a base model's architecture, independent of where it lives."""

    architectures: tuple[str, ...]
    model_type: str
    hidden_size: int | None
    num_hidden_layers: int | None
    vocab_size: int | None
    dtype: str | None
    tie_word_embeddings: bool


@dataclass(frozen=True)
class Delta:
    """One low-rank update: kind is linear (B@A, maybe transposed), embedding ((B@A)^T) or bias (B.bias)."""

    kind: str
    module: str
    a_key: str | None
    b_key: str
    scaling: float
    transpose: bool = False


@dataclass(frozen=True)
class TensorPlan:
    """How one output tensor is made: read from base or adapter, cast, then add deltas in order."""

    name: str
    source: str  # "base" or "adapter"
    source_key: str
    dtype: str
    shape: tuple[int, ...]
    deltas: tuple[Delta, ...] = ()
    round_trip: str | None = None  # "nf4" / "nf4-transposed" (Conv1D): rounded as bitsandbytes loads it in 4-bit


@dataclass(frozen=True)
class QLoRASpec:
    """How a QLoRA-trained adapter is merged: onto the 16-bit weights (w16) or onto them rounded through 4-bit."""

    mode: str  # "w16" or "simulate-nf4"
    reason: str  # why the adapter counts as QLoRA-trained
    quant_type: str = "nf4"
    blocksize: int = 64
    double_quant: bool = True
    skip_modules: tuple[str, ...] | None = None  # llm_int8_skip_modules; None: transformers' default (lm_head)
    settings_from: str = "QLoRA defaults"  # or the pre-quantized checkpoint whose quantization_config was read


@dataclass(frozen=True)
class MergePlan:
    """Everything the merge step does, decided before any weight is read."""

    engine: str  # "stream" (packager's own) or "peft" (merge_and_unload)
    engine_reason: str
    dtype: str  # "auto" keeps each tensor's stored dtype
    tensors: tuple[TensorPlan, ...] = field(repr=False)
    config_updates: dict[str, Any] = field(default_factory=dict)
    tokenizer_from: str = "base"
    notes: tuple[str, ...] = ()
    qlora: QLoRASpec | None = None

    @property
    def changed_tensors(self) -> int:
        return sum(1 for t in self.tensors if t.deltas or t.source == "adapter")


@dataclass(frozen=True)
class AdapterSpec:
    path: str
    checkpoint: int | None
    peft_type: str
    settings: dict[str, Any]
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class BaseSpec:
    path: str
    source: str
    repo_id: str | None
    revision: str | None
    commit: str | None
    fingerprint: Fingerprint
    weights_format: str
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class PackagePlan:
    """The resolved, checked inputs and what will be done with them."""

    adapter: AdapterSpec
    base: BaseSpec
    merge: MergePlan
    packager_version: str = __version__

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_tensors:
            data["merge"]["tensors"] = f"{len(self.merge.tensors)} tensors, {self.merge.changed_tensors} changed"
        return data

    def lock(self) -> dict[str, Any]:
        """The lock file's content: inputs pinned by sha256, no timestamps, so it diffs cleanly."""
        merge: dict[str, Any] = {
            "engine": self.merge.engine,
            "dtype": self.merge.dtype,
            "tokenizer_from": self.merge.tokenizer_from,
        }
        if self.merge.qlora:  # only when set, so other locks stay byte-identical
            merge["qlora"] = dataclasses.asdict(self.merge.qlora)
        return {
            "packager_version": self.packager_version,
            "adapter": dataclasses.asdict(self.adapter),
            "base": dataclasses.asdict(self.base),
            "merge": merge,
        }
