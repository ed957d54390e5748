"""The compose validator: Debian's docker-compose 1.29 (`config` needs no daemon), installed once if missing."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ComposeConfig = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """The docker-compose binary; apt-installs it (with every other missing Debian package) when absent."""
    if shutil.which("docker-compose") is None:
        from scripts import local_engine

        local_engine.ensure_packages()
    found = shutil.which("docker-compose")
    assert found, "docker-compose is not installed and could not be installed"
    return found


@pytest.fixture()
def compose_config(docker_compose: str, tmp_path: Path) -> ComposeConfig:
    """run(text, base_dir=None, quiet=True): `docker-compose -f FILE config [-q]` on `text` in a clean
    environment, PACKAGER_BASE_DIR unset unless `base_dir` is given; returns the finished process."""
    counter = itertools.count()

    def run(text: str, base_dir: str | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
        folder = tmp_path / f"compose-{next(counter)}"
        folder.mkdir()
        (folder / "compose.yaml").write_text(text)
        for name in re.findall(r'env_file: \["([^"/]+)"\]', text):  # the key file the user writes beside it
            (folder / name).write_text("PACKAGER_API_KEY=sk-test\n")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "LANG": "C.UTF-8"}
        if base_dir is not None:
            env["PACKAGER_BASE_DIR"] = base_dir
        command = [docker_compose, "-f", str(folder / "compose.yaml"), "config", *(["-q"] if quiet else [])]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder, timeout=120)

    return run
