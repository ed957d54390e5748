"""The frozen plan every step works from: what base, which files, which tensors change and how, what the image
serves, how it is built and where it goes. planning builds it once; the lock (lock.py), runtime.json and the
labels are derived from it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from packager import __version__
from packager.adapter_kinds import ADAPTERHUB_TYPE, UNMERGED_TYPES
from packager.architecture.fingerprint import Fingerprint
from packager.artefact.spec import ArtefactSpec
from packager.deployment import BASE_VOLUMES, DeploySpec  # noqa: F401 - re-exported
from packager.model_files import is_weight_file
from packager.quantize.plan import QuantizePlan
from packager.runtime.config import RuntimeConfig
from packager.sizes import Sizing
from packager.tasks import ModelTask


@dataclass(frozen=True)
class FileEntry:
    """One input or output file, pinned by size and sha256 (None until hashed)."""

    path: str
    size: int
    sha256: str | None = None
    sample_sha256: str | None = None  # shared layout: the sampled fingerprint the runtime checks at start

    def to_lock(self) -> dict[str, Any]:
        """The lock's entry; `sample_sha256` only where set, so merge locks keep their shape."""
        data = dataclasses.asdict(self)
        if data["sample_sha256"] is None:
            del data["sample_sha256"]
        return data


def files_key(files: tuple[FileEntry, ...]) -> str:
    """The identity of a base's content: sha256 over every (path, sha256) pair, sorted."""
    if any(not f.sha256 for f in files):
        raise ValueError("every base file must be hashed before it can be looked up")
    lines = "".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class Delta:
    """One update of a tensor: linear (+ B@A, maybe transposed), embedding (+ (B@A)^T) or bias (+ B.bias), LoRA's;
    scale (each row, or each column when transposed, times the vector at b_key) or scale_bias, (IA)3's."""

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
    stored_as: str = ""  # the base tensor written under this new name ("": the same name)


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
        """How many output tensors differ from the base's (a delta added, or taken from the adapter)."""
        return sum(1 for t in self.tensors if t.deltas or t.source == "adapter")


@dataclass(frozen=True)
class StepMemory:
    """A step's expected peak resident memory, and what the figure is made of (planning/memory.py)."""

    step: str  # merge, quantize, measure, verify, export
    peak_bytes: int
    basis: str


class Pinned:
    """A spec whose `files` the lock pins: its lock entry is its fields, each file as the lock writes it."""

    files: tuple[FileEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """The lock's entry for this spec."""
        return {**dataclasses.asdict(self), "files": [f.to_lock() for f in self.files]}


@dataclass(frozen=True)
class AdapterSpec(Pinned):
    """A resolved adapter: its folder, checkpoint, PEFT type and settings, and its pinned files."""

    path: str
    checkpoint: int | None
    peft_type: str
    settings: dict[str, Any]
    files: tuple[FileEntry, ...]

    @property
    def is_unmerged(self) -> bool:
        """Whether the adapter is served unmerged by nature (see UNMERGED_TYPES)."""
        return self.peft_type in UNMERGED_TYPES

    @property
    def library(self) -> str:
        """What serves it unmerged: `adapters` (AdapterHub) or `peft`."""
        return "adapters" if self.peft_type == ADAPTERHUB_TYPE else "peft"

    @property
    def weights_sha256(self) -> str:
        """The sha256 of the adapter's weights file ("" before it is hashed)."""
        return next((f.sha256 or "" for f in self.files if is_weight_file(f.path)), "")


@dataclass(frozen=True)
class BaseSpec(Pinned):
    """A resolved base model: where it was found, its revision, fingerprint and pinned files."""

    path: str
    source: str
    repo_id: str | None
    revision: str | None
    commit: str | None
    fingerprint: Fingerprint
    weights_format: str
    files: tuple[FileEntry, ...]

    @property
    def label_id(self) -> str:
        """What names the base in labels: its hub id, else its folder's name."""
        return self.repo_id or os.path.basename(self.path.rstrip("/"))


@dataclass(frozen=True)
class ServedAdapter:
    """An adapter a shared-base image serves, under the name a request's `model` field selects."""

    name: str
    spec: AdapterSpec


@dataclass(frozen=True)
class ImagePlan:
    """The image: what it starts FROM, its tag, which builder makes it, and what its runtime loads (the layout is
    the runtime's)."""

    base_image: str
    tag: str
    builder: str  # docker | oci | buildah ("auto" is decided before the plan is made)
    push: bool
    runtime: RuntimeConfig
    base_source: str = "/models/base"  # shared: the host folder compose.yaml mounts unless told otherwise
    engine_reason: str = "packager's own server"  # why runtime.engine serves this image
    device: str = "cpu"  # cpu | cuda: cuda images request the GPU in compose and cannot be built here
    runtime_packages: tuple[str, ...] = ()  # pinned pip requirements the Dockerfile installs on a CUDA base
    model_image: str = ""  # shared: the pushed base-model image (REPO@sha256:...) the manifests mount, if any
    base_to_make: str = ""  # shared, --quantize: the folder render quantizes the base into ("": an image holds it)
    libraries: tuple[str, ...] = ()  # pinned libraries only this image needs, e.g. adapters==1.3.0 (AdapterHub)
    base_image_how: str = "given with --base-image"  # how the FROM image is had: given, built here, or pulled
    reproducible: bool = False  # the builder gives the same digest for the same inputs (its registry entry says)

    @property
    def layout(self) -> str:
        """baked or shared: the runtime's layout."""
        return self.runtime.layout

    @property
    def engine(self) -> str:
        """The engine the image runs: vllm or packager."""
        return self.runtime.engine

    @property
    def port(self) -> int:
        """The port the image's server listens on."""
        return self.runtime.port


@dataclass(frozen=True)
class PackagePlan:
    """The resolved, checked inputs and what will be done with them, from the merge to the push."""

    adapter: AdapterSpec
    base: BaseSpec
    merge: MergePlan | None  # None: nothing is merged (the shared layout)
    packager_version: str = __version__
    artefact: ArtefactSpec = field(default_factory=ArtefactSpec)
    served: tuple[ServedAdapter, ...] = ()  # shared: every adapter the image serves
    image: ImagePlan | None = None
    task: ModelTask = field(default_factory=ModelTask)  # the transformers class the model is built with
    deploy: DeploySpec = field(default_factory=DeploySpec)  # manifests: not in the lock (they do not make the image)
    quantize: QuantizePlan | None = None  # the merged weights quantized in the same stream (compressed-tensors)
    memory: tuple[StepMemory, ...] = ()  # each step's expected peak, checked against the machine before any work
    sizing: Sizing | None = None  # the serving pod's GPUs, memory and parallelism (packager/sizing)

    @property
    def pinned_files(self) -> int:
        """How many input files the lock pins."""
        adapters = [s.spec for s in self.served] or [self.adapter]
        return len(self.base.files) + sum(len(a.files) for a in adapters)

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        """The whole plan as JSON-ready data (what --dry-run --json prints)."""
        data = dataclasses.asdict(self)
        if self.merge is not None and not with_tensors:
            data["merge"]["tensors"] = f"{len(self.merge.tensors)} tensors, {self.merge.changed_tensors} changed"
        if self.quantize is not None and not with_tensors:
            data["quantize"] = self.quantize.summary()
        if self.image is not None:
            image = {**data["image"], "runtime": self.image.runtime.to_json()}
            data["image"] = {"layout": self.image.layout, **image}
        return data
