"""Adding a quantization scheme, a builder or a deploy target is one registry entry (plus its own module or
template): a test-only one of each (tests/extensions.py), registered here and nowhere else, reaches --help, the
plan in words and in JSON, and what render writes (the quantized checkpoint's report, the target's manifest)."""

from __future__ import annotations

import json

import pytest

from packager.cli.main import build_parser, main
from tests import extensions


@pytest.fixture(scope="module")
def registered():
    with extensions.registered():
        yield


def flags(adapter: str, *extra: str) -> list[str]:
    return [
        "--adapter", adapter, "--layout", "baked", "--runtime", "packager", "--base-image", "x:1",
        "--quantize", extensions.SCHEME.name, "--builder", extensions.BUILDER.name,
        "--target", extensions.TARGET.name, "--tag", "127.0.0.1:5000/acme/ext:1", *extra,
    ]  # fmt: skip


def test_each_entry_reaches_the_help(registered) -> None:
    package = build_parser()._subparsers._group_actions[0].choices["package"]
    text = " ".join(package.format_help().split())
    assert extensions.SCHEME.describe in text
    actions = {a.option_strings[0]: a for a in package._actions if a.option_strings}
    assert extensions.BUILDER.name in actions["--builder"].choices and extensions.BUILDER.describe in text
    assert extensions.TARGET.name in actions["--target"].choices and extensions.TARGET.describe in text


def test_each_entry_reaches_the_plan(registered, demo_adapter, capsys) -> None:
    assert main(["package", *flags(demo_adapter, "--dry-run", "--json")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["artefact"]["quantize"] == plan["quantize"]["scheme"] == extensions.SCHEME.name
    assert plan["quantize"]["preset"] == extensions.SCHEME.preset
    assert plan["image"]["builder"] == extensions.BUILDER.name and plan["image"]["reproducible"] is True
    assert plan["deploy"]["targets"] == [extensions.TARGET.name]
    assert plan["sizing"]["weights_bytes"] > 0
    assert main(["package", *flags(demo_adapter, "--dry-run")]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in (extensions.SCHEME.name, extensions.BUILDER.name, extensions.TARGET.name))


def test_each_entry_reaches_what_render_writes(registered, demo_adapter, tmp_path, capsys) -> None:
    assert main(["render", *flags(demo_adapter, "--work", str(tmp_path / "work"), "--json")]) == 0
    rendered = json.loads(capsys.readouterr().out)
    with open(rendered["lock"]) as f:
        artefact = json.load(f)["artefact"]
    assert artefact["kind"] == f"compressed-tensors-{extensions.SCHEME.name}" and artefact["accuracy"]
    (manifest,) = rendered["manifests"].values()
    with open(manifest) as f:
        job = f.read()
    assert '"127.0.0.1:5000/acme/ext:1"' in job and "to = 8000" in job


def test_a_name_taken_is_refused(registered) -> None:
    from packager.builders import register_builder
    from packager.deploy.targets import register_target
    from packager.quantize.schemes import register_scheme

    for register, entry in ((register_scheme, extensions.SCHEME), (register_builder, extensions.BUILDER),
                            (register_target, extensions.TARGET)):  # fmt: skip
        with pytest.raises(ValueError, match="registered already"):
            register(entry)
