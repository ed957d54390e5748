"""Write a build context from the plan's file list: only what the plan pins reaches the context.

Each layer is a folder that mirrors the image's paths (`model/weights/<file>/models/merged/<file>`), so every
entry of a layer, its directories included, comes from the context, and every entry is stamped with
FIXED_MTIME and a fixed mode: a layer's digest then depends on its files alone, whatever the builder's cache.
A pinned file that is a symlink (a Hugging Face cache snapshot is nothing else) goes in as a regular file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from typing import Any

from packager.bom import BOM_FILE, image_bom
from packager.errors import UserInputError
from packager.image.libraries import LIBRARY_DIR, library_files
from packager.image.paths import ADAPTERS_DIR, FIXED_MTIME, MODEL_DIR, RUNTIME_PACKAGE, RUNTIME_ROOT
from packager.image.render import render_files
from packager.image.runtime_images import image_packages
from packager.io.hashing import sha256_file
from packager.io.staging import staged_directory
from packager.lock import plan_lock
from packager.model_files import LOCK_FILE, is_weight_file
from packager.plan import FileEntry, PackagePlan

CONFIG_LAYER = "config"
RUNTIME_LAYER = "runtime"
LIBRARIES_LAYER = "libraries"


@dataclass(frozen=True)
class ModelFiles:
    """A model folder and the files of it that ship, each pinned by sha256 (what the merge or artefact wrote).
    `owned`: packager wrote the folder, so its files may be hard-linked into the context and stamped."""

    folder: str
    files: tuple[FileEntry, ...]
    owned: bool = True


@dataclass(frozen=True)
class Placement:
    """One file of the context: where it comes from, where it goes in the context and in the image."""

    source: str
    layer: str  # the context folder of its layer
    image_path: str  # absolute path in the image
    entry: FileEntry | None  # the pin; None for what packager writes itself
    owned: bool

    @property
    def context_path(self) -> str:
        """Where the file sits in the context: its layer folder plus its path in the image."""
        return os.path.join(self.layer, self.image_path.lstrip("/"))


@dataclass(frozen=True)
class Context:
    """A written build context: its folder, the lock it holds, and every file its layers put in the image."""

    path: str
    lock: dict[str, Any]
    files: tuple[FileEntry, ...]  # path: the file's absolute path in the image

    @property
    def lock_path(self) -> str:
        """The lock at the context's top (the same file the image holds)."""
        return os.path.join(self.path, LOCK_FILE)


def placements(plan: PackagePlan, model: ModelFiles | None) -> list[Placement]:
    """Where every pinned input goes: the model's files (baked), each served adapter's files (shared, and baked
    when the adapter is served unmerged on the model)."""
    found = [_model_placement(model, entry) for entry in model.files] if model is not None else []
    for served in plan.served:
        for entry in served.spec.files:
            image_path = f"{ADAPTERS_DIR}/{served.name}/{entry.path}"
            source = os.path.join(served.spec.path, entry.path)
            found.append(Placement(source, f"adapters/{served.name}", image_path, entry, False))
    return found


def _model_placement(model: ModelFiles, entry: FileEntry) -> Placement:
    layer = f"model/weights/{entry.path}" if is_weight_file(entry.path) else "model/meta"
    source = os.path.join(model.folder, entry.path)
    return Placement(source, layer, f"{MODEL_DIR}/{entry.path}", entry, model.owned)


def write_context(
    plan: PackagePlan,
    output: str,
    model: ModelFiles | None = None,
    merged: tuple[FileEntry, ...] = (),
    artefact: dict[str, Any] | None = None,
    accuracy: str | None = None,
    force: bool = False,
) -> Context:
    """Write the build context to `output` (atomically): the rendered files, the runtime, runtime.json, the
    lock and the pinned files. `merged`: the merge's output files; `artefact`: the artefact's report."""
    chosen = placements(plan, model)
    weights = sorted(p.image_path.rsplit("/", 1)[-1] for p in chosen if p.layer.startswith("model/weights/"))
    texts = render_files(plan, weights, accuracy)  # validates the plan before anything is written
    with staged_directory(output, force) as staging:
        files = [_place(staging, p) for p in chosen]
        files += _write_runtime(staging, plan)
        files += _write_libraries(staging, plan)
        build = tuple(_text_entry(name, text) for name, text in sorted(texts.items()))
        image_files = tuple(sorted(files, key=lambda f: f.path))
        lock = plan_lock(plan, output=merged, artefact=artefact, image_files=image_files, build_files=build)
        _write_lock(staging, lock)
        _write_bom(staging, plan, lock)
        for name, text in texts.items():
            _write_text(os.path.join(staging, name), text)
        stamp_tree(staging)
    return Context(os.path.abspath(output), lock, tuple(sorted(files, key=lambda f: f.path)))


def _place(staging: str, placement: Placement) -> FileEntry:
    """Put one pinned file into the context as a regular file and check it is still the pinned content."""
    target = os.path.join(staging, placement.context_path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    source = os.path.realpath(placement.source)
    if placement.owned:
        link_or_copy(source, target)
    else:
        shutil.copyfile(source, target)  # the user's file: a copy we may stamp, never their inode
    entry = placement.entry
    size = os.path.getsize(target)
    digest = entry.sha256 if entry and entry.sha256 and placement.owned else sha256_file(target)
    if entry is not None and (size != entry.size or (entry.sha256 and digest != entry.sha256)):
        raise UserInputError(
            f"{placement.source} changed since it was pinned (size or sha256 differs); rerun the command"
        )
    return FileEntry(placement.image_path, size, digest)


def link_or_copy(source: str, target: str) -> None:
    """A hard link costs no disk; fall back to a copy across filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_runtime(staging: str, plan: PackagePlan) -> list[FileEntry]:
    """The runtime package and runtime.json (from the plan's runtime config): written here, hashed here."""
    written = []
    source = resources.files("packager.runtime")
    for item in sorted(source.iterdir(), key=lambda i: i.name):
        if item.name.endswith(".py"):
            written.append(
                _write_file(staging, RUNTIME_LAYER, f"{RUNTIME_ROOT}/{RUNTIME_PACKAGE}/{item.name}", item.read_text())
            )
    runtime = plan.image.runtime.to_json() if plan.image else {}
    written.append(_write_file(staging, CONFIG_LAYER, f"{RUNTIME_ROOT}/runtime.json", _json_text(runtime)))
    return written


def _write_libraries(staging: str, plan: PackagePlan) -> list[FileEntry]:
    """The pinned libraries only this image needs, copied from this environment's installed distributions."""
    written = []
    for name in (pin.split("==")[0] for pin in (plan.image.libraries if plan.image else ())):
        for source, relative in library_files(name):
            target = os.path.join(staging, LIBRARIES_LAYER, LIBRARY_DIR.lstrip("/"), relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
            written.append(FileEntry(f"{LIBRARY_DIR}/{relative}", os.path.getsize(target), sha256_file(target)))
    return written


def _write_file(staging: str, layer: str, image_path: str, text: str) -> FileEntry:
    target = os.path.join(staging, layer, image_path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    _write_text(target, text)
    return FileEntry(image_path, os.path.getsize(target), sha256_file(target))


def _write_lock(staging: str, lock: dict[str, Any]) -> None:
    """The lock goes into the image (config layer) and, as the same inode, at the context's top for people."""
    inside = os.path.join(staging, CONFIG_LAYER, RUNTIME_ROOT.lstrip("/"), LOCK_FILE)
    _write_text(inside, _json_text(lock))
    os.link(inside, os.path.join(staging, LOCK_FILE))


def _write_bom(staging: str, plan: PackagePlan, lock: dict[str, Any]) -> None:
    """The ML-BOM (bom.py), made from the lock as written, beside it: in the image and at the context's top."""
    packages = image_packages(plan.image) if plan.image else []
    text = image_bom(lock, _json_text(lock), packages, plan.image.base_image if plan.image else "")
    inside = os.path.join(staging, CONFIG_LAYER, RUNTIME_ROOT.lstrip("/"), BOM_FILE)
    _write_text(inside, text)
    os.link(inside, os.path.join(staging, BOM_FILE))


def stamp_tree(root: str) -> None:
    """Give every entry under `root` FIXED_MTIME and a fixed mode (0644 files, 0755 folders)."""
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            path = os.path.join(folder, name)
            os.chmod(path, 0o644)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        os.chmod(folder, 0o755)
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def _text_entry(name: str, text: str) -> FileEntry:
    data = text.encode()
    return FileEntry(name, len(data), hashlib.sha256(data).hexdigest())


def _json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
