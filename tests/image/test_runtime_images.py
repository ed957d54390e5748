"""Without --base-image the plan names the runtime image it needs, the one `make base-image` builds (issue 18:
`render` and `--dry-run` need no flag beyond the adapter, and no engine); a real build without one is refused
with that name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from packager.cli.main import main
from packager.demo import build_demo
from packager.image.runtime_images import image_tag

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PACKAGER_BASE_IMAGE": ""}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> str:
    return build_demo(str(tmp_path_factory.mktemp("rt") / "demo"))[1]


def test_the_tag_is_the_one_make_base_image_builds() -> None:
    for runtime in ("packager", "vllm"):
        script = [sys.executable, os.path.join(ROOT, "scripts", "base_image.py"), "--print-tag", "--runtime", runtime]
        printed = subprocess.run(script, capture_output=True, text=True, check=True).stdout.strip()
        assert printed == image_tag(runtime) and printed.split(":")[0] in ("packager-runtime", "packager-vllm")


@pytest.mark.parametrize(("layout", "runtime"), [("baked", "vllm"), ("shared", "vllm"), ("baked", "packager")])
def test_dry_run_and_render_name_the_runtime_image_without_an_engine(
    adapter, tmp_path, capsys, monkeypatch, layout, runtime
) -> None:
    for name, value in NO_ENGINE.items():
        monkeypatch.setenv(name, value)
    flags = ["--adapter", adapter, "--layout", layout, "--runtime", runtime, "--work", str(tmp_path / "w")]
    assert main(["package", *flags, "--dry-run", "--json"]) == 0
    out, err = capsys.readouterr()
    expected = image_tag(runtime)
    image = json.loads(out)["image"]
    how = f"built here from its recipe by `packager base-image --runtime {runtime}` (package does it when missing)"
    assert image["base_image"] == expected and image["base_image_how"] == how, "the JSON says how to get it too"
    assert f"package: FROM {expected}, the runtime image this plan needs ({how})" in err
    assert main(["render", *flags]) == 0
    with open(tmp_path / "w" / "context" / "Dockerfile") as f:
        assert f"FROM {expected}" in f.read()


def test_a_package_without_a_base_image_or_an_engine_is_refused_in_one_line(adapter, tmp_path, capsys, monkeypatch):
    """With an engine the first `package` builds the runtime image (tests/e2e/test_wheel.py shows it from a wheel);
    without one it says so, before any work."""
    for name, value in NO_ENGINE.items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "w"
    assert main(["package", "--adapter", adapter, "--layout", "baked", "--work", str(work)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (
        "error: the runtime image is built in a Docker engine and none answers (DOCKER_HOST, else the default "
        "socket); start one, or pass --base-image IMAGE"
    )
    assert not work.exists()


def test_base_image_prints_the_tag_the_recipe_gives_without_an_engine(capsys, monkeypatch) -> None:
    for name, value in NO_ENGINE.items():
        monkeypatch.setenv(name, value)
    for runtime in ("packager", "vllm"):
        assert main(["base-image", "--runtime", runtime, "--print-tag"]) == 0
        assert capsys.readouterr().out.strip() == image_tag(runtime)
