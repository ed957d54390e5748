"""The buildah builder: daemonless builds, and pushes with uncompressed layers.

Safetensors weights do not compress (about -1% on bf16), yet `docker push` gzips every layer on one core;
`buildah push --disable-compression` uploads them as they are (OCI allows uncompressed layers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence

from packager.builders.base import (
    BuildRequest,
    BuildResult,
    Layer,
    Log,
    PushRequest,
    PushResult,
    push_error,
    with_retries,
)
from packager.errors import EngineError
from packager.image.dockerfile import parse_dockerfile
from packager.image.paths import FIXED_MTIME
from packager.image.reference import registry_host

LOCAL_HOSTS = ("127.", "localhost")


def storage_args() -> list[str]:
    """buildah's --storage-driver, when PACKAGER_BUILDAH_STORAGE_DRIVER names one."""
    driver = os.environ.get("PACKAGER_BUILDAH_STORAGE_DRIVER")
    return ["--storage-driver", driver] if driver else []


def buildah_build_argv(request: BuildRequest) -> list[str]:
    """`buildah bud` for a context: no pulls, no network, and a fixed --timestamp (created times and file
    mtimes), so the same context gives the same image."""
    dockerfile = os.path.join(request.context, request.dockerfile)
    argv = [
        "buildah",
        *storage_args(),
        "bud",
        "--layers",
        "--pull=never",
        "--network",
        request.network_mode,
        "--format",
        "oci",
        "--timestamp",
        str(FIXED_MTIME),
        "-f",
        dockerfile,
        "-t",
        request.tag,
    ]
    return [*argv, *(["--no-cache"] if request.nocache else []), request.context]


def buildah_push_argv(request: PushRequest, authfile: str | None, digestfile: str) -> list[str]:
    """`buildah push` with uncompressed layers; credentials only through the authfile, never the argv."""
    insecure = registry_host(request.target).startswith(LOCAL_HOSTS)
    argv = ["buildah", *storage_args(), "push", "--disable-compression", "--digestfile", digestfile, "--retry", "0"]
    argv += ["--tls-verify=false"] if insecure else []
    argv += ["--authfile", authfile] if authfile else []
    return [*argv, request.image, f"docker://{request.target}"]


class BuildahBuilder:
    """Daemonless builds with buildah bud (fixed timestamp) and uncompressed pushes."""

    name = "buildah"

    def __init__(self, engine_url: str | None = None) -> None:
        if shutil.which("buildah") is None:
            raise EngineError("buildah is not installed; `apt-get install buildah` or use --builder docker")
        self.engine_url = engine_url or os.environ.get("DOCKER_HOST")

    def build(self, request: BuildRequest, log: Log) -> BuildResult:
        """Build the context; the FROM image is copied from the Docker engine when buildah's store lacks it."""
        started = time.monotonic()
        self.ensure_base_image(_from_image(os.path.join(request.context, request.dockerfile)), log)
        _run(buildah_build_argv(request), log, "image build failed")
        info = self._inspect(request.tag)
        layers = _layers(info)
        return BuildResult(
            self.name,
            request.tag,
            info["FromImageID"],
            sum(layer.size for layer in layers),
            time.monotonic() - started,
            layers,
        )

    def push(self, request: PushRequest, log: Log) -> PushResult:
        """Push the built image, retrying transient registry failures."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            authfile = _write_authfile(tmp, request)
            digestfile = os.path.join(tmp, "digest")
            argv = buildah_push_argv(request, authfile, digestfile)
            _, attempt = with_retries(lambda: _run(argv, log, "push failed", classify=True), log)
            with open(digestfile) as f:
                digest = f.read().strip()
        return PushResult(self.name, request.target, digest, time.monotonic() - started, attempt)

    def ensure_base_image(self, base: str, log: Log) -> None:
        """Copy the FROM image out of the Docker engine when buildah's store lacks it (no registry pull).

        buildah's docker-daemon transport ignores DOCKER_HOST, so the image travels as a `docker save` archive.
        """
        probe = subprocess.run(
            ["buildah", *storage_args(), "inspect", "--type", "image", base], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return
        import docker

        log(f"copying {base} from the Docker engine into buildah's store")
        client = docker.DockerClient(base_url=self.engine_url) if self.engine_url else docker.from_env()
        with tempfile.TemporaryDirectory(dir=os.environ.get("PACKAGER_TMP")) as tmp:
            archive = os.path.join(tmp, "base.tar")
            with open(archive, "wb") as f:
                for chunk in client.images.get(base).save(chunk_size=8 << 20):
                    f.write(chunk)
            pulled = _run(
                ["buildah", *storage_args(), "pull", "--quiet", f"docker-archive:{archive}"],
                log,
                "could not load the base image",
            )
        _run(["buildah", *storage_args(), "tag", pulled[-1], base], log, "could not tag the base image")

    def _inspect(self, tag: str) -> dict:
        proc = subprocess.run(
            ["buildah", *storage_args(), "inspect", "--type", "image", tag], capture_output=True, text=True, check=True
        )
        return json.loads(proc.stdout)


def _from_image(dockerfile: str) -> str:
    with open(dockerfile) as f:
        return parse_dockerfile(f.read()).base


def _layers(info: dict) -> tuple[Layer, ...]:
    manifest = json.loads(info.get("Manifest") or "{}")
    sizes = [layer.get("size", 0) for layer in manifest.get("layers", [])]
    diff_ids = info.get("OCIv1", {}).get("rootfs", {}).get("diff_ids", [])
    history = [h for h in info.get("OCIv1", {}).get("history", []) if not h.get("empty_layer")]
    history = history if len(history) == len(diff_ids) else [{}] * len(diff_ids)
    sizes = sizes if len(sizes) == len(diff_ids) else [0] * len(diff_ids)
    return tuple(
        Layer(d, s, str(h.get("created_by", ""))[:200]) for d, s, h in zip(diff_ids, sizes, history, strict=True)
    )


def _write_authfile(folder: str, request: PushRequest) -> str | None:
    """Credentials go to a private temp file (never argv, where `ps` would show them)."""
    if request.username is None:
        return None
    import base64

    token = base64.b64encode(f"{request.username}:{request.password or ''}".encode()).decode()
    path = os.path.join(folder, "auth.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {registry_host(request.target): {"auth": token}}}, f)
    return path


def _run(argv: Sequence[str], log: Log, what: str, classify: bool = False, env: dict | None = None) -> list[str]:
    """The one place buildah runs: stream its output to `log`, turn a failure into one line; return the last lines."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    for line in proc.stdout:
        log(line.rstrip())
        tail = [*tail[-19:], line.strip()]
    if proc.wait() != 0:
        message = " | ".join(t for t in tail[-3:] if t)
        if classify:
            raise push_error(message, argv[-1].removeprefix("docker://"))
        raise EngineError(f"{what}: {message[:200]}")
    return tail
