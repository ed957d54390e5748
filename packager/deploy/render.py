"""Render the manifests the plan asks for (`plan.deploy.targets`) and write them into one folder, atomically.

Pure rendering (`render_manifests`) is separate from the I/O (`write_manifests`): the same plan and image
reference always give the same bytes, which the golden tests pin.
"""

from __future__ import annotations

import os

from packager.deploy.values import manifest_values
from packager.image.render import template_environment
from packager.io.staging import staged_directory
from packager.plan import PackagePlan

TEMPLATES = {
    "compose": ("compose.yaml",),
    "kubernetes": ("kubernetes.yaml",),
    "kserve": ("kserve.yaml", "kserve-llm.yaml"),
}


def manifest_names(plan: PackagePlan, target: str) -> tuple[str, ...]:
    """The files a target writes: the LLMInferenceService only for vLLM serving adapters on a shared base, and
    alone when the model spans nodes (an InferenceService's predictor is one pod)."""
    names = TEMPLATES[target]
    image = plan.image
    if image is None or image.layout != "shared" or image.engine != "vllm":
        names = tuple(n for n in names if n != "kserve-llm.yaml")
    if plan.sizing is not None and plan.sizing.nodes > 1:
        names = tuple(n for n in names if n == "kserve-llm.yaml")
    return names


def render_manifests(plan: PackagePlan, reference: str) -> dict[str, str]:
    """Every manifest of the plan's targets, by file name; `reference`: the image, pinned by digest once pushed."""
    env = template_environment()
    files = {}
    for target in plan.deploy.targets:
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
