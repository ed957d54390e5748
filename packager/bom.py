"""The image's machine-learning bill of materials: CycloneDX 1.6 JSON, written with cyclonedx-python-lib from the
lock (so it names exactly what the lock pins) and the runtime's pinned packages.

What it holds: the image (the BOM's subject); the served model(s) as `machine-learning-model` components (baked:
the merged or quantized model, every file with its sha256, its task, quantization and the accuracy packager
measured; shared: each adapter under its served name), the base and each adapter they come from (hub id and
revision, or folder; every file's sha256; licence where the model card says), the runtime's Python packages as
`pkg:pypi` components, the runtime base image, and the lock itself (its sha256); the dependency graph joins them.

Reproducible: no timestamp, and the serial number is a UUID made from the lock's sha256 (the same inputs give the
same lock, so the same BOM, byte for byte)."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from typing import Any

BOM_FILE = "bom.cdx.json"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LICENSE_LINE = re.compile(r"^license:\s*['\"]?([A-Za-z0-9.+-]+)['\"]?\s*$", re.MULTILINE)


def image_bom(lock: dict[str, Any], lock_text: str, packages: Sequence[str], base_image: str) -> str:
    """The BOM's JSON text for the image `lock` describes (`lock_text`: the lock file as written; `packages`:
    `name==version` of the runtime's Python packages; `base_image`: the image it starts FROM)."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.output.json import JsonV1Dot6

    lock_sha = hashlib.sha256(lock_text.encode()).hexdigest()
    bom = Bom(serial_number=uuid.UUID(bytes=bytes.fromhex(lock_sha[:32]), version=5))
    bom.metadata.timestamp = None
    image = _image(lock)
    bom.metadata.component = image
    made, sources = _models(lock)
    served = [model for model, _ in made]
    libraries = [_package(pin) for pin in sorted(set(packages))]
    runtime = _container(base_image, "runtime-base-image")
    pinned = _file("packager.lock.json", lock_sha, "lock")
    for component in [*served, *sources.values(), *libraries, runtime, pinned]:
        bom.components.add(component)
    for model, refs in made:
        bom.register_dependency(model, [sources[ref] for ref in refs])
    bom.register_dependency(runtime, libraries)
    bom.register_dependency(image, [*served, runtime, pinned])
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def _image(lock: dict[str, Any]) -> Any:
    tag = lock.get("image", {}).get("tag") or "unnamed"
    return _container(tag, "image")


def _container(reference: str, ref: str) -> Any:
    from cyclonedx.model.component import Component, ComponentType

    name, _, version = reference.rpartition(":") if "@" not in reference else (reference, "", "")
    if "/" in version or not name:  # a registry port, not a tag
        name, version = reference, ""
    return Component(name=name, version=version or None, type=ComponentType.CONTAINER, bom_ref=ref)


def _models(lock: dict[str, Any]) -> tuple[list[tuple[Any, list[str]]], dict[str, Any]]:
    """The served model(s), each with the bom-refs it is made from, and those models by bom-ref (base, adapter or
    adapter:NAME)."""
    sources = {"base": _model("base", lock["base"], _base_source(lock["base"]), "base")}
    if lock.get("adapters"):  # shared: each adapter is served on the base, under its name
        made = []
        for name, spec in lock["adapters"].items():
            sources[f"adapter:{name}"] = _model(f"adapter:{name}", spec, spec["path"], "adapter", name)
            made.append(_served(name, f"served:{name}", ["base", f"adapter:{name}"], lock))
        return made, sources
    sources["adapter"] = _model("adapter", lock["adapter"], lock["adapter"]["path"], "adapter")
    files = lock.get("output", {}).get("files", [])  # baked: the model as the merge (and quantization) wrote it
    return [_served("merged", "served", ["base", "adapter"], lock, files)], sources


def _model(ref: str, spec: dict[str, Any], source: str, role: str, name: str | None = None) -> Any:
    from cyclonedx.model.component import Component, ComponentType

    label = name or spec.get("repo_id") or os.path.basename(str(spec.get("path", "")).rstrip("/")) or role
    properties = {"packager:role": role, "packager:source": source}
    if spec.get("peft_type"):
        properties["packager:adapter-method"] = spec["peft_type"]
    component = Component(
        name=label, version=spec.get("revision") or spec.get("commit"), type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=ref, properties=_properties(properties), licenses=_licenses(spec.get("path")),
    )  # fmt: skip
    for entry in spec.get("files", []):
        component.components.add(_file(entry["path"], entry.get("sha256"), f"{ref}/{entry['path']}"))
    return component


def _served(
    name: str, ref: str, made_from: list[str], lock: dict[str, Any], files: Sequence[dict[str, Any]] = ()
) -> tuple[Any, list[str]]:
    """A model the image serves (its files, when it has its own), with the bom-refs it is made from."""
    from cyclonedx.model.component import Component, ComponentType

    properties = {"packager:role": "served", "packager:made-from": " ".join(made_from), **_task(lock)}
    properties.update(_quantization(lock))
    component = Component(name=name, type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref=ref,
                          properties=_properties(properties))  # fmt: skip
    for entry in files:
        component.components.add(_file(entry["path"], entry.get("sha256"), f"{ref}/{entry['path']}"))
    return component, made_from


def _task(lock: dict[str, Any]) -> dict[str, str]:
    return {"packager:task": lock.get("task", {}).get("name", "CAUSAL_LM")}


def _quantization(lock: dict[str, Any]) -> dict[str, str]:
    """The scheme and the accuracy figures the artefact report measured, each a property."""
    found: dict[str, str] = {}
    scheme = (lock.get("quantize") or {}).get("scheme") or (lock.get("artefact") or {}).get("kind")
    if scheme:
        found["packager:quantization"] = str(scheme)
    accuracy = (lock.get("artefact") or {}).get("accuracy") or {}
    for key, value in sorted(accuracy.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[f"packager:accuracy:{key}"] = f"{value:.6g}"
    return found


def _file(path: str, sha256: str | None, ref: str) -> Any:
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.component import Component, ComponentType

    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=sha256)] if sha256 and SHA256.match(sha256) else []
    return Component(name=path, type=ComponentType.FILE, bom_ref=ref, hashes=hashes)


def _package(pin: str) -> Any:
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    name, _, version = pin.partition("==")
    purl = PackageURL("pypi", None, name.lower(), version or None)
    return Component(name=name, version=version or None, type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl))


def _properties(values: dict[str, str]) -> list[Any]:
    from cyclonedx.model import Property

    return [Property(name=name, value=value) for name, value in sorted(values.items())]


def _base_source(spec: dict[str, Any]) -> str:
    if spec.get("repo_id"):
        return f"{spec['repo_id']}@{spec.get('commit') or spec.get('revision') or 'main'}"
    return str(spec.get("path", ""))


def _licenses(folder: str | None) -> list[Any]:
    """The licence a model card's front matter declares (README.md: `license: apache-2.0`), if any."""
    from cyclonedx.model.license import DisjunctiveLicense

    card = os.path.join(folder or "", "README.md")
    try:
        with open(card, encoding="utf-8") as f:
            head = f.read(8192)
    except OSError:
        return []
    if not head.startswith("---"):
        return []
    match = LICENSE_LINE.search(head.split("---", 2)[1] if head.count("---") >= 2 else "")
    return [DisjunctiveLicense(name=match.group(1))] if match else []
