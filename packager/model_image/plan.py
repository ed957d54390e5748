"""The frozen plan of a base-model image: which base (every file pinned), which layers, what it starts FROM, its
tag and labels. Built once by `plan_model_image`; the context, the labels and the record derive from it."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from packager import __version__
from packager.errors import UserInputError
from packager.image.filters import image_ref, relative_path
from packager.model_files import is_weight_file
from packager.plan import BaseSpec, FileEntry, files_key

MODELS_DIR = "/models"  # where KServe's modelcar and an ImageVolume's `subPath: models` find the files
DEFAULT_MAX_LAYER_BYTES = 10 * 10**9  # the common registry cap on one layer (Docker Hub, GHCR, Quay)


@dataclass(frozen=True)
class ModelLayer:
    """One layer of the image: a weight file on its own, or every small file together (`meta`)."""

    name: str  # the layer's folder in the context: weights/<file> or meta
    files: tuple[FileEntry, ...]

    @property
    def size(self) -> int:
        """The bytes of file content in the layer."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class ModelImagePlan:
    """A base model as an image: its files under /models, a layer per weight file, labels naming every file."""

    base: BaseSpec
    tag: str
    runnable_image: str  # the FROM image: sh, ln, sleep (model_image.runnable)
    builder: str
    push: bool
    max_layer_bytes: int = DEFAULT_MAX_LAYER_BYTES
    split: tuple[str, ...] = ()  # the base's weight files split at tensor boundaries to fit max_layer_bytes
    source_files_key: str = ""  # split, quantized: the key a shared package looks this image up by
    packager_version: str = __version__
    quantization: str = ""  # a compressed-tensors scheme the base was quantized with (package-base --quantize)
    accuracy: dict[str, Any] | None = field(default=None, repr=False)  # the quantized base against 16-bit

    @property
    def files_key(self) -> str:
        """The base's identity (sha256 over every file's path and sha256): what records and labels key on."""
        try:
            return files_key(self.base.files)
        except ValueError:  # a dry run of a split: the parts are not written, so not hashed, yet
            return ""

    @property
    def lookup_key(self) -> str:
        """What the record is filed under: the key of the base as resolved (before any split)."""
        return self.source_files_key or self.files_key

    @property
    def layers(self) -> tuple[ModelLayer, ...]:
        """Every small file in one layer, then each weight file in a layer of its own (sorted): a registry that
        has a weight file's layer never receives it again."""
        meta = tuple(f for f in self.base.files if not is_weight_file(f.path))
        weights = sorted((f for f in self.base.files if is_weight_file(f.path)), key=lambda f: f.path)
        return (ModelLayer("meta", meta), *(ModelLayer(f"weights/{f.path}", (f,)) for f in weights))

    def labels(self) -> list[tuple[str, str]]:
        """OCI labels plus packager's: the base's id, revision and the sha256 of every file; sorted."""
        files = {f.path: f.sha256 for f in sorted(self.base.files, key=lambda f: f.path)}
        values = {
            "org.opencontainers.image.title": self.base.label_id,
            "org.opencontainers.image.description": f"base model {self.base.label_id} for packager's shared layout",
            "org.opencontainers.image.base.name": self.runnable_image,
            "io.packager.version": self.packager_version,
            "io.packager.kind": "base-model",
            "io.packager.models-dir": MODELS_DIR,
            "io.packager.base.id": self.base.label_id,
            "io.packager.base.revision": self.base.commit or self.base.revision or "",
            "io.packager.base.files-key": self.files_key,
            "io.packager.base.files": json.dumps(files, separators=(",", ":")),
        }
        if self.split:
            values["io.packager.base.split-from"] = json.dumps(list(self.split), separators=(",", ":"))
        if self.source_files_key:
            values["io.packager.base.source-files-key"] = self.source_files_key
        if self.quantization:
            values["io.packager.base.quantization"] = self.quantization
        return sorted(values.items())

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what --dry-run --json prints)."""
        data = dataclasses.asdict(self)
        data["layers"] = [{"name": layer.name, "bytes": layer.size} for layer in self.layers]
        return data


def plan_model_image(
    base: BaseSpec,
    tag: str,
    runnable_image: str,
    builder: str,
    push: bool,
    max_layer_bytes: int,
    split: tuple[str, ...] = (),
    source_files_key: str = "",
    dry_run: bool = False,
) -> ModelImagePlan:
    """Check the inputs and freeze the plan: every file hashed (but in a dry run) and plainly named, every layer
    under the cap (`base`: the files as the image holds them, after any split)."""
    image_ref(tag)
    image_ref(runnable_image)
    if not dry_run and any(not f.sha256 for f in base.files):
        raise UserInputError("every base file must be pinned by sha256 before it goes into an image; rerun")
    for entry in base.files:
        relative_path(entry.path)
    plan = ModelImagePlan(base, tag, runnable_image, builder, push, max_layer_bytes, split, source_files_key)
    for layer in plan.layers:
        check_layer_fits(layer, max_layer_bytes)
    return plan


def check_layer_fits(layer: ModelLayer, max_layer_bytes: int) -> None:
    """Refuse a layer above the cap, naming what is too big and the fix."""
    if layer.size <= max_layer_bytes:
        return
    what = "the non-weight files together are" if layer.name == "meta" else f"{layer.name} is"
    fix = "" if layer.name == "meta" else "re-shard the base (save_pretrained(max_shard_size=...)) or "
    raise UserInputError(
        f"{what} {human_size(layer.size)}, above --max-layer-size {human_size(max_layer_bytes)}; {fix}raise "
        "--max-layer-size to what your registry accepts"
    )


def human_size(n: int) -> str:
    """Bytes for a message: GB, MB or plain bytes, whichever reads best."""
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.2f} MB" if n >= 10**5 else f"{n} bytes"


def default_tag(base: BaseSpec) -> str:
    """`packager/<base name>-base:<first 12 hex of the files key>`: the same base always gets the same tag."""
    name = re.sub(r"[^a-z0-9]+", "-", base.label_id.lower()).strip("-") or "model"
    return f"packager/{name}-base:{files_key(base.files)[:12]}"
