"""The build context's text files, rendered from the plan: Dockerfile and .dockerignore (the manifests that
run the image are deploy/'s).

Pure: plan in, file texts out (`context.py` does the I/O). Every user value passes a validation or quoting
filter (`filters.py`) on its way into a template.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2

from packager import __version__
from packager.choices import LAYOUTS
from packager.errors import UserInputError
from packager.image.filters import FILTERS, image_ref, safe_name
from packager.image.libraries import LIBRARY_DIR
from packager.image.paths import BASE_MOUNT, MODEL_DIR
from packager.image.reference import split_target
from packager.plan import ImagePlan, PackagePlan
from packager.runtime.config import BACKENDS, LOAD_QUANTIZATIONS


def template_environment(extra: str = "") -> jinja2.Environment:
    """jinja2 over templates/ (after `extra`, a folder of a deploy target's own): StrictUndefined (a missing value
    fails), no autoescape, the quoting filters."""
    loader = jinja2.FileSystemLoader([p for p in (extra, str(resources.files("packager.templates"))) if p])
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def validate(plan: PackagePlan) -> ImagePlan:
    """Refuse bad layouts, names, ports and image references before anything is written; returns the image."""
    image = plan.image
    if image is None:
        raise UserInputError("the plan has no image to render; plan it with `packager package` or `render`")
    if image.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {image.layout!r}; use one of {', '.join(LAYOUTS)}")
    image_ref(image.base_image)
    image_ref(image.tag)
    if not 1 <= image.port <= 65535:
        raise UserInputError(f"port {image.port} is out of range; use 1-65535")
    runtime = image.runtime
    if runtime.backend not in BACKENDS or runtime.load_quantization not in LOAD_QUANTIZATIONS:
        raise UserInputError(
            f"unknown runtime backend {runtime.backend!r} or load quantization {runtime.load_quantization!r}"
        )
    safe_name(runtime.served_name or "")
    if image.layout == "shared" and not plan.served:
        raise UserInputError("the shared layout needs at least one adapter; pass --adapter NAME=PATH")
    names = [safe_name(s.name) for s in plan.served]
    if len(set(names)) != len(names):
        raise UserInputError(f"adapter names must be unique, got {', '.join(names)}")
    return image


def labels(plan: PackagePlan, accuracy: str | None = None) -> list[tuple[str, str]]:
    """OCI labels plus packager's own: what base, which adapter bytes, which layout; sorted for stable output."""
    image = validate(plan)
    name, tag = split_target(image.tag)
    adapter_sha = ",".join(f"{s.name}={s.spec.weights_sha256}" for s in plan.served) or plan.adapter.weights_sha256
    values = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.description": f"LLM adapter served by packager ({image.layout} layout)",
        "org.opencontainers.image.base.name": image.base_image,
        "io.packager.version": plan.packager_version,
        "io.packager.layout": image.layout,
        "io.packager.base.id": plan.base.label_id,
        "io.packager.base.revision": plan.base.commit or plan.base.revision or "",
        "io.packager.adapter.sha256": adapter_sha,
        "io.packager.quantization": plan.artefact.label,
        "io.packager.backend": image.runtime.backend if image.layout == "baked" else "transformers",
        "io.packager.port": str(image.port),
        "io.packager.runtime": image.engine,
    }
    if accuracy:
        values["io.packager.accuracy"] = accuracy
    if image.layout == "shared":
        values["io.packager.base-mount"] = BASE_MOUNT
        if image.model_image:
            values["io.packager.base.image"] = image.model_image
    return sorted(values.items())


def template_context(plan: PackagePlan, weights: list[str], accuracy: str | None = None) -> dict[str, Any]:
    """The values every template sees (each one still goes through a filter inside the template)."""
    image = validate(plan)
    return {
        "packager_version": __version__,
        "base_image": image.base_image,
        "image": image.tag,
        "port": image.port,
        "model_dir": MODEL_DIR,
        "base_mount": BASE_MOUNT,
        "weight_files": weights,
        "adapters": [s.name for s in plan.served],
        "labels": labels(plan, accuracy),
        "service": safe_name(image.runtime.served_name or ""),
        "base_source": image.base_source,
        # vLLM: the launcher checks the base, then execs the engine; its cold start is longer (three processes)
        "entrypoint": "packager_runtime.vllm_launch" if image.engine == "vllm" else "packager_runtime.server",
        "start_period": 300 if image.engine == "vllm" else 120,
        "engine": image.engine,
        "device": image.device,
        "runtime_packages": list(image.runtime_packages),
        "libraries": list(image.libraries),
        "library_dir": LIBRARY_DIR,
    }


def render_files(plan: PackagePlan, weights: list[str], accuracy: str | None = None) -> dict[str, str]:
    """Every rendered text file of the build context, by name (`weights`: the model's weight files, baked)."""
    image = validate(plan)
    env, context = template_environment(), template_context(plan, weights, accuracy)
    files = {
        "Dockerfile": env.get_template(f"Dockerfile.{image.layout}.j2").render(context),
        ".dockerignore": env.get_template("dockerignore.j2").render(context),
    }
    return files
