"""Write a base-model image's build context from its plan: the Dockerfile, and one folder per layer that mirrors
the image's paths (`weights/<file>/models/<file>`, `meta/models/...`).

The base's files are hard-linked where the filesystem allows (a copy otherwise) and checked against their pins
after placing; they are never touched (no chmod, no new mtime: they are the user's files). The oci builder does
not read mtimes or modes from the context, it writes fixed ones into each layer, so the image is reproducible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from packager import __version__
from packager.errors import UserInputError
from packager.image.context import link_or_copy
from packager.image.render import template_environment
from packager.io.hashing import sha256_file
from packager.io.staging import staged_directory
from packager.model_image.plan import MODELS_DIR, ModelImagePlan
from packager.plan import FileEntry


@dataclass(frozen=True)
class ModelContext:
    """A written base-model context: its folder and the files it puts under /models."""

    path: str
    files: tuple[FileEntry, ...]  # path: the file's absolute path in the image


def render_dockerfile(plan: ModelImagePlan) -> str:
    """The base-model image's Dockerfile (pure)."""
    return (
        template_environment()
        .get_template("Dockerfile.model.j2")
        .render(
            packager_version=__version__,
            base_id=plan.base.label_id,
            models_dir=MODELS_DIR,
            runnable_image=plan.runnable_image,
            layers=[layer.name for layer in plan.layers],
            labels=plan.labels(),
        )
    )


def write_model_context(plan: ModelImagePlan, output: str, force: bool = True) -> ModelContext:
    """Write the context to `output` atomically; refuses a base file that changed since it was pinned."""
    dockerfile = render_dockerfile(plan)
    placed = []
    with staged_directory(output, force) as staging:
        for layer in plan.layers:
            for entry in layer.files:
                placed.append(_place(plan.base.path, entry, os.path.join(staging, layer.name)))
        with open(os.path.join(staging, "Dockerfile"), "w") as f:
            f.write(dockerfile)
    return ModelContext(os.path.abspath(output), tuple(placed))


def _place(folder: str, entry: FileEntry, layer_dir: str) -> FileEntry:
    """Link one base file into its layer folder and check it is still what the plan pinned."""
    target = os.path.join(layer_dir, MODELS_DIR.lstrip("/"), entry.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    source = os.path.realpath(os.path.join(folder, entry.path))
    link_or_copy(source, target)
    if os.path.getsize(target) != entry.size or sha256_file(target) != entry.sha256:
        raise UserInputError(
            f"{os.path.join(folder, entry.path)} changed since it was pinned (size or sha256 differs); rerun"
        )
    return FileEntry(f"{MODELS_DIR}/{entry.path}", entry.size, entry.sha256, entry.sample_sha256)
