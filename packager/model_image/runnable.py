"""The smallest image a base-model image can start FROM and still run: a static busybox with `sh`, `ln`, `sleep`,
`cp` and `true`, which is what KServe's modelcar sidecar (`ln -sf /proc/$$/root/models /mnt/ && sleep infinity`),
a compose loader service and a Kubernetes loader Job run. No public image can be pulled here, so it is made
locally: one deterministic tar (fixed mtimes, root owner, sorted), imported into the engine; its tag is the
sha256 of that tar, so the same busybox always gives the same layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile

from packager.errors import EngineError, UserInputError
from packager.image.paths import FIXED_MTIME

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "ln", "sleep", "cp", "true", "ls", "cat", "mkdir", "test")
REPOSITORY = "packager-modelbase"
PT_INTERP = 3
CONFIG_CHANGE = 'CMD ["sleep", "infinity"]'  # `docker run IMAGE true` runs true; a modelcar's command replaces it


def find_busybox() -> str:
    """A static busybox on this machine (Debian: busybox-static); refused when it is dynamically linked."""
    for path in (*BUSYBOX_PATHS, shutil.which("busybox") or ""):
        if path and os.path.isfile(path) and _is_static(path):
            return path
    raise UserInputError(
        "no static busybox on this machine to build the base-model image's runnable layer; install it "
        "(apt-get install busybox-static) or pass --from IMAGE with sh, ln and sleep"
    )


def _is_static(path: str) -> bool:
    """A 64-bit ELF without a PT_INTERP program header needs no loader, so it runs in an otherwise empty image."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:5] != b"\x7fELF\x02" or len(head) < 64:
        return False
    offset = int.from_bytes(head[32:40], "little")
    size, count = int.from_bytes(head[54:56], "little"), int.from_bytes(head[56:58], "little")
    kinds = [int.from_bytes(head[offset + i * size : offset + i * size + 4], "little") for i in range(count)]
    return PT_INTERP not in kinds


def runnable_tar(busybox: str) -> bytes:
    """The image's only layer: /bin/busybox, one symlink per applet, an empty /models and a 1777 /tmp."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in (("bin", 0o755), ("models", 0o755), ("tmp", 0o1777)):
            tar.addfile(_info(name, tarfile.DIRTYPE, mode))
        with open(busybox, "rb") as f:
            data = f.read()
        info = _info("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, FIXED_MTIME, 0, 0
    return info


def runnable_tag(layer: bytes) -> str:
    """The image's tag: named by its layer's content and its config."""
    return f"{REPOSITORY}:{hashlib.sha256(layer + CONFIG_CHANGE.encode()).hexdigest()[:16]}"


def ensure_runnable_image(engine_url: str | None = None) -> str:
    """Import the runnable image into the Docker engine unless it is there; returns its tag."""
    import docker
    import docker.errors

    layer = runnable_tar(find_busybox())
    tag = runnable_tag(layer)
    url = engine_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        api = docker.APIClient(base_url=url, timeout=120)
        try:
            api.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            repository, version = tag.split(":")
            api.import_image_from_data(layer, repository=repository, tag=version, changes=[CONFIG_CHANGE])
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot reach the Docker engine at {url} ({exc}); start it (make engine-up)") from None
    return tag
