"""Render the manifests the plan asks for (`plan.deploy.targets`) and write them into one folder, atomically.

Pure rendering (`render_manifests`) is separate from the I/O (`write_manifests`): the same plan and image
reference always give the same bytes, which the golden tests pin.
"""

from __future__ import annotations

import os

from packager.deploy.targets import get_target
from packager.deploy.values import manifest_values
from packager.image.render import template_environment
from packager.io.staging import staged_directory
from packager.plan import PackagePlan


def manifest_names(plan: PackagePlan, target: str) -> tuple[str, ...]:
    """The files `target` writes for this plan (its registry entry decides)."""
    return get_target(target).files(plan)


def render_manifests(plan: PackagePlan, reference: str) -> dict[str, str]:
    """Every manifest of the plan's targets, by file name; `reference`: the image, pinned by digest once pushed."""
    files = {}
    for target in plan.deploy.targets:
        env = template_environment(get_target(target).templates)
        values = manifest_values(plan, reference, target)
        for name in manifest_names(plan, target):
            files[name] = env.get_template(f"{name}.j2").render(values)
    return files


def write_manifests(plan: PackagePlan, reference: str, folder: str) -> dict[str, str]:
    """Render and write the manifests into `folder` (replaced as a whole); returns {name: path}."""
    files = render_manifests(plan, reference)
    if not files:
        return {}
    with staged_directory(folder, force=True) as staging:
        for name, text in files.items():
            with open(os.path.join(staging, name), "w") as f:
                f.write(text)
    return {name: os.path.join(os.path.abspath(folder), name) for name in sorted(files)}
