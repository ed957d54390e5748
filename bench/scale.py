"""The shared layout at scale, measured (run through `bench/package.py --parts base,adapter,pods`):

- base: `packager package-base` of the 1.1B-dims base (2.2 GB, three shards) to a fresh registry, against the
  floor (tar the same files, sha256 them, upload them raw as one blob), then the same base pushed again;
- adapter: a second adapter packaged against a base and runtime the registry already holds: seconds, and the
  bytes the registry stored against the adapter's own bytes;
- pods: from `docker run` to healthy for N servers sharing one base volume filled from the base image, against
  N servers that each get their own copy (a volume filled per pod, as a node-local download would).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packager.model_image.make import BaseImageRequest, package_base
from packager.package import package
from packager.plan import DeploySpec
from tests.requests import package_request

QUIET = {"log": lambda _line: None}
HEALTH = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"


@dataclass(frozen=True)
class Timed:
    """One measured step: seconds and the bytes it sent or stored."""

    seconds: float
    bytes: int


def folder_bytes(path: str) -> int:
    """Bytes of every file under `path`."""
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def served_base(base: Path, tokenizer_from: Path, work: Path) -> Path:
    """The bench base plus a tokenizer (the random base has none, and a server needs one): hard links, no copy."""
    out = work / "base-1b-served"
    if not (out / "tokenizer.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        for item in base.iterdir():
            if item.is_file() and not (out / item.name).exists():
                os.link(item, out / item.name)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tokenizer_from / name).exists():
                (out / name).write_bytes((tokenizer_from / name).read_bytes())
    for item in out.iterdir():
        os.chmod(item, 0o644)
    return out


def second_adapter(adapter: Path, work: Path) -> Path:
    """The bench adapter with every B doubled: new bytes, the same size."""
    from safetensors.torch import load_file, save_file

    out = work / "adapter-1b-second"
    if not (out / "adapter_model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        loaded = load_file(adapter / "adapter_model.safetensors")
        tensors = {k: v * 2 if "lora_B" in k else v for k, v in loaded.items()}
        save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        (out / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    return out


def push_base(base: Path, registry: str, tag: str, work: Path) -> tuple[Timed, str]:
    """package-base with the oci builder; returns (seconds and bytes sent, the pinned reference)."""
    started = time.monotonic()
    request = BaseImageRequest(str(base), tag=f"{registry}/{tag}", push=True, builder="oci", work=str(work))
    report = package_base(request, **QUIET)
    return Timed(time.monotonic() - started, report.pushed_bytes or 0), report.reference or ""


def package_adapter(adapter: Path, base: Path, runtime: str, registry: str, name: str, work: Path, storage: str):
    """A shared image of one adapter, pushed; returns (seconds and bytes the registry stored, the image)."""
    before = folder_bytes(storage)
    started = time.monotonic()
    request = package_request(
        ((name, str(adapter)),),
        "shared",
        runtime,
        f"{registry}/bench/shared:{name}",
        base=str(base),
        work=str(work / f"work-{name}"),
        builder="oci",
        push=True,
        quiet=True,
        runtime="packager",
        deploy=DeploySpec(("kubernetes",)),
    )
    report = package(request, **QUIET)
    seconds = time.monotonic() - started
    return Timed(seconds, folder_bytes(storage) - before), f"{registry}/bench/shared@{report.digest}"


def fill_volume(client, reference: str, name: str) -> None:
    """What a compose `base` service or a loader does: Docker copies the image's /models into the empty volume."""
    client.volumes.create(name)
    client.containers.run(reference, ["true"], volumes={name: {"bind": "/models", "mode": "rw"}}, remove=True)


def pods_to_healthy(client, image: str, base_ref: str, pods: int, shared: bool) -> float:
    """Seconds from the first `docker run` (volume filling included) until every server answers /health."""
    names = ["bench-base"] if shared else [f"bench-base-{i}" for i in range(pods)]
    started = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: fill_volume(client, base_ref, n), names))
    containers = [
        client.containers.run(
            image,
            detach=True,
            network_mode="none",
            volumes={names[0 if shared else i]: {"bind": "/base", "mode": "ro"}},
        )
        for i in range(pods)
    ]
    try:
        pending = list(containers)
        while pending:
            pending = [c for c in pending if c.exec_run(["python3", "-c", HEALTH])[0] != 0]
            for c in pending:
                c.reload()
                if c.status == "exited":
                    raise RuntimeError(c.logs().decode()[-1500:])
            time.sleep(0.5)
        return time.monotonic() - started
    finally:
        for c in containers:
            c.remove(force=True)
        for name in names:
            client.volumes.get(name).remove(force=True)
