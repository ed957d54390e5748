"""Builders' pure parts: call arguments, target parsing, push error classification, the Dockerfile subset."""

from __future__ import annotations

import pytest

from packager.builders.base import BuildRequest, PushRequest, push_error
from packager.builders.buildah import buildah_build_argv, buildah_push_argv
from packager.builders.docker import docker_auth_config, docker_build_kwargs
from packager.errors import RegistryAuthError, RegistryError, UserInputError
from packager.image.dockerfile import parse_dockerfile
from packager.image.reference import registry_host, split_target
from tests.image.test_render import BAKED, WEIGHTS


def test_docker_build_never_pulls_and_has_no_network() -> None:
    kwargs = docker_build_kwargs(BuildRequest("/ctx", "acme/x:1"))
    assert kwargs["network_mode"] == "none" and kwargs["pull"] is False and kwargs["path"] == "/ctx"


def test_credentials_only_when_given() -> None:
    assert docker_auth_config(PushRequest("i", "h:5000/r:1")) is None
    assert docker_auth_config(PushRequest("i", "h:5000/r:1", "u", "p")) == {"username": "u", "password": "p"}


def test_buildah_argv_keeps_credentials_out_of_the_command_line() -> None:
    argv = buildah_push_argv(PushRequest("img", "127.0.0.1:5000/r:1", "user", "s3cret"), "/tmp/auth.json", "/tmp/d")
    assert "s3cret" not in " ".join(argv) and "--authfile" in argv and "--tls-verify=false" in argv
    assert "--tls-verify=false" not in buildah_push_argv(PushRequest("img", "registry.example.com/r:1"), None, "/d")
    argv = buildah_build_argv(BuildRequest("/ctx", "t:1"))
    assert argv[-1] == "/ctx" and argv[argv.index("--timestamp") + 1] == "315532800"


@pytest.mark.parametrize(
    ("target", "repository", "tag", "host"),
    [
        ("127.0.0.1:5000/team/model:1", "127.0.0.1:5000/team/model", "1", "127.0.0.1:5000"),
        ("localhost/model", "localhost/model", "latest", "localhost"),
        ("acme/model:2", "acme/model", "2", "docker.io"),
    ],
)
def test_targets(target, repository, tag, host) -> None:
    assert split_target(target) == (repository, tag) and registry_host(target) == host


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("no basic auth credentials", RegistryAuthError),
        ("unauthorized: authentication required", RegistryAuthError),
        ("Get http://127.0.0.1:1/v2/: dial tcp 127.0.0.1:1: connect: connection refused", RegistryError),
        ("invalid reference format", UserInputError),
        ("blob upload unknown", RegistryError),
    ],
)
def test_push_errors_become_one_line_with_the_fix(message, kind) -> None:
    error = push_error(message, "127.0.0.1:5000/team/model")
    assert type(error) is kind and "\n" not in str(error)


def test_oci_builder_reads_the_rendered_dockerfile() -> None:
    from packager.image.render import render_files

    recipe = parse_dockerfile(render_files(BAKED, WEIGHTS)["Dockerfile"])
    assert recipe.base == "packager-runtime:0123abcd" and recipe.user == "10001:10001"
    assert [layer.sources for layer in recipe.layers][:2] == [(f"model/weights/{w}/",) for w in WEIGHTS]
    assert recipe.layers[0].uid == 10001 and recipe.env["HF_HUB_OFFLINE"] == "1"
    assert recipe.labels["io.packager.layout"] == "baked" and recipe.exposed == ["8000/tcp"]
    assert recipe.entrypoint[:3] == ["python3", "-m", "packager_runtime.server"]
    assert recipe.healthcheck["Retries"] == 3 and recipe.healthcheck["Interval"] == 30 * 10**9


def test_push_retries_transient_failures_only(monkeypatch) -> None:
    from packager.builders import base

    monkeypatch.setattr(base.time, "sleep", lambda _s: None)
    outcomes = iter([RegistryError("blob upload unknown"), RegistryError("503"), "sha256:ok"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    lines: list[str] = []
    assert base.with_retries(flaky, lines.append) == ("sha256:ok", 3) and len(lines) == 2
    calls = []

    def refused():
        calls.append(1)
        raise RegistryAuthError("registry refused the credentials")

    with pytest.raises(RegistryAuthError):
        base.with_retries(refused, lines.append)
    assert calls == [1]
    with pytest.raises(RegistryError):
        base.with_retries(lambda: (_ for _ in ()).throw(RegistryError("down")), lines.append, attempts=2)
