"""Benchmark: packaging the TinyLlama-1.1B-dims model, against floors.

- builders: a baked package of the merged model, build + push per builder. The floor is what any builder must
  at least do with the same bytes: tar the context, sha256 it, upload it raw as one blob to the same registry on
  127.0.0.1. Each builder run starts from a fresh registry and builds without cache.
- base, adapter, pods: the shared layout at scale (bench/scale.py): the base as an image vs its floor and
  re-pushed; a second adapter against a pushed base and runtime; N pods to healthy on one volume vs own copies.

    python bench/package.py [--parts builders,base,adapter,pods] [--repeats 2] [--builders docker,buildah] [--pods 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(ROOT)]

from merge import SPECS, ensure_models, model_paths  # noqa: E402

from packager.builders import get_builder  # noqa: E402
from packager.builders.base import BuildRequest, PushRequest  # noqa: E402
from packager.image.context import ModelFiles, write_context  # noqa: E402
from packager.plan import FileEntry  # noqa: E402
from packager.planning.job import plan_package  # noqa: E402
from scripts import base_image, local_engine  # noqa: E402
from tests.requests import package_request  # noqa: E402

ENGINE_ROOT = os.environ.get("PACKAGER_BENCH_ENGINE_ROOT", "/var/tmp/packager-engine")  # make package's engine


def merged_model(work: Path) -> Path:
    """The 1.1B-dims merge (2 GB shards, as `packager package` writes them), made once."""
    out = work / "merged-1b-package"
    if not (out / "packager.lock.json").exists():
        base, adapter = model_paths(SPECS["1b"], work)
        ensure_models(SPECS["1b"], work)
        subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "packager"),
                "merge",
                "--adapter",
                str(adapter),
                "--base",
                str(base),
                "--output",
                str(out),
                "--no-verify",
                "--quiet",
                "--max-shard-size",
                "2GB",
                "--force",
            ],
            check=True,
        )
    return out


def render(merged: Path, runtime: str, work: Path) -> str:
    """The baked context of the merged 1.1B model: the plan from resolve, the model files from the merge's lock."""
    import json

    base, adapter = model_paths(SPECS["1b"], work)
    request = package_request((("bench", str(adapter)),), "baked", runtime, "bench/baked:1", base=str(base))
    lock = json.loads((merged / "packager.lock.json").read_text())
    files = tuple(FileEntry(**f) for f in lock["output"]["files"])
    model = ModelFiles(str(merged), files)
    return write_context(plan_package(request).plan, str(work / "context-1b"), model, files, force=True).path


def floor(context: str, registry: str) -> float:
    """tar + sha256 + one raw blob upload of the same bytes."""
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(context), suffix=".tar") as tmp:
        with tarfile.open(tmp.name, "w") as tar:
            tar.add(context, arcname=".")
        digest = hashlib.sha256()
        with open(tmp.name, "rb") as f:
            for block in iter(lambda: f.read(16 << 20), b""):
                digest.update(block)
        _upload_blob(registry, tmp.name, "sha256:" + digest.hexdigest())
    return time.monotonic() - started


def _upload_blob(registry: str, path: str, digest: str) -> None:
    host, port = registry.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("POST", "/v2/bench/floor/blobs/uploads/")
    response = conn.getresponse()
    response.read()
    location = response.getheader("Location")
    location = location.split(registry, 1)[-1] if "://" in location else location
    separator = "&" if "?" in location else "?"
    with open(path, "rb") as f:
        conn.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            body=f,
            headers={"Content-Length": str(os.path.getsize(path)), "Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        response.read()
    if response.status != 201:
        raise RuntimeError(f"blob upload failed: {response.status}")


def seed_base_image(name: str, runtime: str, registry: str) -> None:
    """Put the runtime base image in the registry first (untimed): packages are pushed where it already is."""
    builder = get_builder(name)
    target = f"{registry}/bench/{name}:base"
    if name == "oci":  # a context that is only the base image: its layers go up uncompressed, as oci sends them
        with tempfile.TemporaryDirectory() as seed:
            Path(seed, "Dockerfile").write_text(f"FROM {runtime}\n")
            builder.build(BuildRequest(seed, target), log=lambda _line: None)
            builder.push(PushRequest(target, target), log=lambda _line: None)
        return
    if name == "buildah":
        builder.ensure_base_image(runtime, log=lambda _line: None)
        subprocess.run(["buildah", "tag", runtime, target], check=True, capture_output=True)
    builder.push(PushRequest(runtime if name == "docker" else target, target), log=lambda _line: None)


def run_builder(name: str, context: str, registry: str, runtime: str) -> tuple[float, float]:
    builder = get_builder(name)
    seed_base_image(name, runtime, registry)
    tag = f"{registry}/bench/{name}:1"
    built = builder.build(BuildRequest(context, tag, nocache=True), log=lambda _line: None)
    pushed = builder.push(PushRequest(tag, tag), log=lambda _line: None)
    _remove_image(name, tag)
    return built.seconds, pushed.seconds


def _remove_image(builder: str, tag: str) -> None:
    if builder == "oci":
        return  # the oci builder leaves no local image
    if builder == "buildah":
        subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
    else:
        import docker

        client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
        client.images.remove(tag, force=True)
        client.images.prune(filters={"dangling": True})


def fresh_registry(tmp: Path) -> local_engine.Registry:
    shutil.rmtree(tmp, ignore_errors=True)
    return local_engine.start_registry(str(tmp))


def measure(
    builders: list[str], repeats: int, context: str, work: Path, runtime: str
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in [*builders, "floor"]}
    for _ in range(repeats):
        for name in [*builders, "floor"]:
            registry = fresh_registry(work / "bench-registry")
            try:
                results[name].append(
                    (0.0, floor(context, registry.url))
                    if name == "floor"
                    else run_builder(name, context, registry.url, runtime)
                )
            finally:
                local_engine.stop_registry(registry)
            print(f"{name}: build {results[name][-1][0]:.1f}s push {results[name][-1][1]:.1f}s", file=sys.stderr)
    return results


def table(results: dict[str, list[tuple[float, float]]], weights_gb: float) -> str:
    floor_total = statistics.median(sum(r) for r in results["floor"])
    lines = [
        f"baked package, {weights_gb:.2f} GB of weights, median of {len(results['floor'])} runs",
        "",
        "| path | build s | push s | build+push s | × floor |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        build, push = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        total = statistics.median(sum(r) for r in runs)
        lines.append(f"| {name} | {build:.1f} | {push:.1f} | {total:.1f} | {total / floor_total:.2f} |")
    return "\n".join(lines)


def scale(work: Path, runtime: str, repeats: int, pods: int, parts: list[str]) -> str:
    """The shared-layout parts: base push vs floor and re-push, a second adapter, pods to healthy."""
    import docker
    import scale as bench_scale

    base, adapter = model_paths(SPECS["1b"], work)
    ensure_models(SPECS["1b"], work)
    subprocess.run([str(ROOT / ".venv" / "bin" / "packager"), "demo", "--output", str(work / "demo")], check=True)
    served = bench_scale.served_base(base, work / "demo" / "base", work)
    weights_gb = sum(p.stat().st_size for p in served.glob("*.safetensors")) / 1e9
    rows = [f"shared layout, base {weights_gb:.2f} GB of weights ({len(list(served.glob('*.safetensors')))} files)"]
    rows += ["", "| step | run | seconds | bytes sent / stored |", "|---|---|---:|---:|"]
    for run in range(1, repeats + 1):
        registry = fresh_registry(work / "bench-registry")
        storage = os.path.join(registry.root, "storage", "docker", "registry", "v2", "blobs")
        try:
            first, reference = bench_scale.push_base(served, registry.url, "bench/base:1", work / "base-work")
            again, _ = bench_scale.push_base(served, registry.url, "bench/base:2", work / "base-work")
            floor_s = floor(str(work / "base-work" / "base-context"), registry.url)
            rows += [f"| package-base (oci) | {run} | {first.seconds:.1f} | {first.bytes / 1e9:.3f} GB |"]
            rows += [f"| floor: tar + sha256 + raw upload | {run} | {floor_s:.1f} | same bytes, one blob |"]
            rows += [f"| package-base again, unchanged | {run} | {again.seconds:.1f} | {again.bytes} B |"]
            if "adapter" in parts or "pods" in parts:
                seed, _ = bench_scale.package_adapter(adapter, served, runtime, registry.url, "first", work, storage)
                second_dir = bench_scale.second_adapter(adapter, work)
                second, image = bench_scale.package_adapter(
                    second_dir, served, runtime, registry.url, "second", work, storage
                )
                own = sum(f.stat().st_size for f in second_dir.iterdir())
                rows += [f"| shared image, first adapter (runtime uploaded) | {run} | {seed.seconds:.1f} | "]
                rows[-1] += f"{seed.bytes / 1e6:.1f} MB |"
                rows += [f"| shared image, second adapter | {run} | {second.seconds:.1f} | {second.bytes / 1e6:.1f}"]
                rows[-1] += f" MB ({second.bytes / own:.2f}x its {own / 1e6:.1f} MB) |"
            if "pods" in parts:
                client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=600)
                client.images.pull(image)
                client.images.pull(reference)
                for shared in (True, False):
                    seconds = bench_scale.pods_to_healthy(client, image, reference, pods, shared)
                    what = "one shared volume" if shared else "a copy each"
                    rows += [f"| {pods} pods to healthy, {what} | {run} | {seconds:.1f} | |"]
        finally:
            local_engine.stop_registry(registry)
        print("\n".join(rows), file=sys.stderr)
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="builders,base,adapter,pods", help="what to measure (default all)")
    parser.add_argument("--pods", type=int, default=3, help="pods for the pods part (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path (default 2)")
    parser.add_argument("--builders", default="oci,docker,buildah", help="comma-separated builders (default all)")
    parser.add_argument("--work", default=str(BENCH_DIR / "work"), help="work folder (default bench/work)")
    args = parser.parse_args()
    work = Path(args.work)
    parts = args.parts.split(",")
    local_engine.ensure_packages()
    engine = local_engine.start_engine(ENGINE_ROOT)
    os.environ["DOCKER_HOST"] = engine.docker_host
    try:
        runtime = base_image.ensure_base_image(engine.docker_host)
        if "builders" in parts:
            merged = merged_model(work)
            context = render(merged, runtime, work)
            weights = sum(p.stat().st_size for p in merged.glob("*.safetensors")) / 1e9
            print(table(measure(args.builders.split(","), args.repeats, context, work, runtime), weights))
        if {"base", "adapter", "pods"} & set(parts):
            print(scale(work, runtime, args.repeats, args.pods, parts))
    finally:
        local_engine.stop_engine(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
