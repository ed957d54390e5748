"""The test-only scheme, builder and deploy target (tests/extensions.py), registered and nowhere else written
down, carry a real `package --push` through: the report names the builder and the quantized artefact, and the
target's manifest names the pushed image by its digest."""

from __future__ import annotations

import json

from packager.cli.main import main
from tests import extensions


def test_a_registered_scheme_builder_and_target_package_and_push(
    demo_adapter, runtime_image, registry, tmp_path, capsys
) -> None:
    tag = f"{registry.url}/acme/extension:1"
    args = [
        "package", "--adapter", demo_adapter, "--layout", "baked", "--runtime", "packager",
        "--base-image", runtime_image, "--quantize", extensions.SCHEME.name, "--builder", extensions.BUILDER.name,
        "--target", extensions.TARGET.name, "--tag", tag, "--push", "--work", str(tmp_path), "--json",
    ]  # fmt: skip
    with extensions.registered():
        assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["builder"] == extensions.BUILDER.name and report["reproducible"] is True
    assert report["artefact"]["kind"] == f"compressed-tensors-{extensions.SCHEME.name}"
    with open(report["manifests"]["nomad.hcl"]) as f:
        assert f'"{registry.url}/acme/extension@{report["digest"]}"' in f.read()
