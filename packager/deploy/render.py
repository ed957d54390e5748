"""Render the manifests the plan asks for (`plan.deploy.targets`) and write them into one folder, atomically.

Pure rendering (`render_manifests`) is separate from the I/O (`write_manifests`): the same plan and image
reference always give the same bytes, which the golden tests pin.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from packager.deploy.targets import get_target
from packager.deploy.values import k8s_name, manifest_values
from packager.image.reference import split_target
from packager.image.render import template_environment
from packager.io.staging import staged_directory
from packager.plan import PackagePlan
from packager.runtime.signature import SIGNATURE_DIR

ADMISSION_POLICY = "admission-policy.yaml"


@dataclass(frozen=True)
class Signature:
    """A signed image's model signature and public key (files), which pods mount to check what they serve."""

    bundle: str
    public_key: str

    def values(self, name: str) -> dict[str, str]:
        """What the templates render: the texts, where pods mount them, the ConfigMap's name."""
        return {
            "bundle": Path(self.bundle).read_text(),
            "public_key": Path(self.public_key).read_text(),
            "mount": SIGNATURE_DIR,  # where the runtime looks
            "config_map": f"{name}-signature",
        }


def manifest_names(plan: PackagePlan, target: str) -> tuple[str, ...]:
    """The files `target` writes for this plan (its registry entry decides)."""
    return get_target(target).files(plan)


def render_manifests(plan: PackagePlan, reference: str, signature: Signature | None = None) -> dict[str, str]:
    """Every manifest of the plan's targets, by file name; `reference`: the image, pinned by digest once pushed;
    `signature`: a signed image's, which its pods mount (and a cluster target gets an admission policy)."""
    files, signed = {}, signature.values(k8s_name(plan)) if signature else None
    for target in plan.deploy.targets:
        env = template_environment(get_target(target).templates)
        values = {**manifest_values(plan, reference, target), "signature": signed}
        for name in manifest_names(plan, target):
            files[name] = env.get_template(f"{name}.j2").render(values)
    clusters = [t for t in plan.deploy.targets if get_target(t).cluster]
    if signed and clusters:
        files[ADMISSION_POLICY] = admission_policy(plan, reference, clusters[0], signed["public_key"])
    return files


def admission_policy(plan: PackagePlan, reference: str, target: str, public_key: str) -> str:
    """A Kyverno ClusterPolicy admitting the image's repository only with this key's signature (`target`: the
    cluster target whose values name the workload)."""
    repository = split_target(reference.split("@", 1)[0])[0]
    values = {**manifest_values(plan, reference, target), "repository": repository, "public_key": public_key}
    return template_environment().get_template(f"{ADMISSION_POLICY}.j2").render(values)


def write_manifests(
    plan: PackagePlan, reference: str, folder: str, signature: Signature | None = None
) -> dict[str, str]:
    """Render and write the manifests into `folder` (replaced as a whole; a signed image's signature files go to
    `signature/` for compose to mount); returns {name: path}."""
    files = render_manifests(plan, reference, signature)
    if not files:
        return {}
    with staged_directory(folder, force=True) as staging:
        for name, text in files.items():
            with open(os.path.join(staging, name), "w") as f:
                f.write(text)
        if signature is not None:
            os.makedirs(os.path.join(staging, "signature"))
            for source in (signature.bundle, signature.public_key):
                shutil.copyfile(source, os.path.join(staging, "signature", os.path.basename(source)))
    return {name: os.path.join(os.path.abspath(folder), name) for name in sorted(files)}
