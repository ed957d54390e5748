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
    """The one file a target writes (one Service per target, nothing to choose between): for KServe, the
    LLMInferenceService where vLLM serves adapters on a shared base at fixed replicas (routed by adapter) or the
    model spans nodes, else the InferenceService (which autoscales)."""
    if target != "kserve":
        return TEMPLATES[target]
    image, nodes = plan.image, plan.sizing.nodes if plan.sizing is not None else 1
    routed = image is not None and image.layout == "shared" and image.engine == "vllm" and not plan.deploy.max_replicas
    return ("kserve-llm.yaml",) if routed or nodes > 1 else ("kserve.yaml",)


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
