"""Hand-made plans for the pure renderers' tests (no model needed): the values of the golden files."""

from __future__ import annotations

import dataclasses

from packager.architecture.fingerprint import Fingerprint
from packager.artefact.spec import ArtefactSpec
from packager.builders import BUILDERS
from packager.plan import AdapterSpec, BaseSpec, FileEntry, ImagePlan, MergePlan, PackagePlan, ServedAdapter
from packager.runtime.config import RuntimeConfig

FINGERPRINT = Fingerprint(("LlamaForCausalLM",), "llama", 64, 2, 256, "float32", False)
BASE = BaseSpec("/models/tiny", "local", "acme/tiny-llama", None, "0123456789abcdef", FINGERPRINT, "safetensors", ())
ADAPTER = AdapterSpec("/a/demo", None, "LORA", {"r": 8}, (FileEntry("adapter_model.safetensors", 10, "ab" * 32),))
MERGE = MergePlan("stream", "LoRA", "auto", ())


def adapter(name: str, sha: str) -> ServedAdapter:
    files = (FileEntry("adapter_config.json", 2, "00" * 32), FileEntry("adapter_model.safetensors", 10, sha))
    return ServedAdapter(name, AdapterSpec(f"/a/{name}", None, "LORA", {"r": 8}, files))


def baked(tag: str = "127.0.0.1:5000/acme/demo:1.0", **runtime) -> PackagePlan:
    config = RuntimeConfig("baked", model_dir="/models/merged", served_name="demo", **runtime)
    image = ImagePlan("packager-runtime:0123abcd", tag, "docker", False, config, "/models/base")
    return PackagePlan(ADAPTER, BASE, MERGE, image=image)


def shared(served: tuple[ServedAdapter, ...] | None = None, base_source: str = "/srv/models/tiny-llama") -> PackagePlan:
    served = served if served is not None else (adapter("sql", "cd" * 32), adapter("chat", "ef" * 32))
    config = RuntimeConfig(
        "shared",
        served_name="shared",
        base_dir="/base",
        adapters=tuple((s.name, f"/adapters/{s.name}") for s in served),
        lock="/opt/packager/packager.lock.json",
    )
    image = ImagePlan("packager-runtime:0123abcd", "acme/shared:2", "docker", False, config, base_source)
    return PackagePlan(served[0].spec if served else ADAPTER, BASE, None, served=served, image=image)


def with_image(plan: PackagePlan, **changes) -> PackagePlan:
    """The plan with its image's fields changed (base_image, tag, base_source, runtime...); a builder brings the
    reproducibility its registry entry promises."""
    assert plan.image is not None
    if "builder" in changes:
        changes = {"reproducible": BUILDERS[changes["builder"]].reproducible, **changes}
    return dataclasses.replace(plan, image=dataclasses.replace(plan.image, **changes))


def with_runtime(plan: PackagePlan, **changes) -> PackagePlan:
    assert plan.image is not None
    return with_image(plan, runtime=dataclasses.replace(plan.image.runtime, **changes))


def with_base(plan: PackagePlan, **changes) -> PackagePlan:
    return dataclasses.replace(plan, base=dataclasses.replace(plan.base, **changes))


ONNX_INT8_SPEC = ArtefactSpec("int8", "onnx")
