"""Installed like any tool (issue 24): the wheel, installed into a fresh virtual environment outside the
checkout, runs the demo to an image: the templates, the data files and the runtime image's recipe travel in the
wheel, and `package` finds (or builds) the runtime image itself, with no Makefile and no scripts/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with packager's wheel in it; its dependencies come from the test environment's site-packages
    (a .pth line: the wheel itself is what is under test, not PyPI's copies of torch and transformers)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(ROOT)], check=True)  # fmt: skip
    wheel = next((root / "dist").glob("packager-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    venv_site = Path(subprocess.run([str(root / "venv" / "bin" / "python"), "-c", "import sysconfig; print("
                                     "sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                                    check=True).stdout.strip())  # fmt: skip
    (venv_site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(venv_site),
                    str(wheel)], check=True)  # fmt: skip
    return root / "venv"


def test_the_wheel_in_a_fresh_venv_runs_the_demo_to_an_image(installed, tmp_path, engine, vllm_image, docker_client):
    python, packager = installed / "bin" / "python", installed / "bin" / "packager"
    where = subprocess.run([str(python), "-c", "import packager; print(packager.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert where.startswith(str(installed)) and not where.startswith(str(ROOT)), where
    if not packager.exists():  # --target installs no console script: the entry point, as pip would write it
        packager.write_text(f"#!{python}\nfrom packager.cli.main import main_entry\nmain_entry()\n")
        packager.chmod(0o755)
    env = {**os.environ, "DOCKER_HOST": engine.docker_host, "HF_HUB_OFFLINE": "1", "PACKAGER_BASE_IMAGE": ""}
    subprocess.run([str(packager), "demo", "--output", "demo"], cwd=tmp_path, env=env, check=True)
    done = subprocess.run([str(packager), "package", "--adapter", "demo=demo/adapter", "--layout", "baked", "--tag",
                           "wheel-demo:1", "--builder", "docker", "--no-verify", "--work", "w"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built wheel-demo:1" in done.stdout
    image = docker_client.images.get("wheel-demo:1")
    assert image.labels["io.packager.runtime"] == "vllm" and vllm_image in (tmp_path / "w" / "context" / "Dockerfile"
                                                                            ).read_text()  # fmt: skip
    docker_client.images.remove("wheel-demo:1", force=True)
