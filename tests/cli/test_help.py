"""`--help` that teaches and stays true: every choice read from the registry it names, every default stated,
the flags of `package` grouped, examples, and none of the stale texts issue 24 found."""

from __future__ import annotations

import argparse

import pytest

from packager.artefact.spec import EXPORT_CHOICES, GRANULARITIES
from packager.builders import BUILDERS
from packager.choices import DEVICES, LAYOUTS, RUNTIMES
from packager.cli.main import build_parser
from packager.deploy.targets import TARGETS
from packager.deployment import BASE_VOLUMES
from packager.quantize.schemes import names, quantize_choices
from packager.sizes import KV_DTYPES
from packager.tasks import TASKS

COMMANDS = build_parser()._subparsers._group_actions[0].choices  # name -> its parser
REGISTRIES = {
    "--layout": LAYOUTS, "--runtime": RUNTIMES, "--device": DEVICES, "--target": tuple(TARGETS),
    "--base-volume": BASE_VOLUMES, "--kv-cache-dtype": KV_DTYPES, "--export": EXPORT_CHOICES,
    "--onnx-granularity": GRANULARITIES, "--task": tuple(TASKS),
}  # fmt: skip


def option(command: str, flag: str) -> argparse.Action:
    return next(a for a in COMMANDS[command]._actions if flag in a.option_strings)


@pytest.mark.parametrize("command", ["package", "render", "merge", "quantize", "package-base", "verify", "build"])
def test_every_choice_is_the_registrys(command) -> None:
    for action in COMMANDS[command]._actions:
        flag = next(iter(action.option_strings), "")
        if flag in REGISTRIES:
            assert tuple(action.choices) == tuple(REGISTRIES[flag]), (command, flag)
        if flag == "--builder":
            assert set(action.choices) <= {"auto", *BUILDERS} and set(BUILDERS) <= set(action.choices), command
        if flag == "--quantize" and command == "package-base":  # the base is streamed into a checkpoint only
            assert tuple(action.choices) == ("none", *names("streamed"))
        elif flag == "--quantize":
            assert all(name in action.help for name in quantize_choices() if name != "none"), (command, action.help)


@pytest.mark.parametrize("command", ["package", "render", "merge", "quantize", "package-base", "verify", "base-image"])
def test_every_default_is_stated(command) -> None:
    for action in COMMANDS[command]._actions:
        if action.default in (None, False, argparse.SUPPRESS, "", [], ()) or not action.option_strings:
            continue
        assert action.help and "default" in action.help.lower(), (command, action.option_strings, action.help)


def test_package_groups_its_flags_and_shows_examples() -> None:
    text = COMMANDS["package"].format_help()
    headings = ["\ninputs:", "\nartefact:", "\nserving:", "\nsizing (", "\nimage:", "\ndeployment:", "\noutput:"]
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions), "groups in the order a reader looks for them"
    assert "examples:\n  packager package --adapter ./my-lora --layout baked --dry-run" in text


def test_the_stale_texts_are_gone() -> None:
    """Issue 24: `merge --artefact-output` named the removed int8|int4, `build --builder` an auto choice and a
    --push it lacks, `quantize --quantize` said the merge streams."""
    assert "int4" not in option("merge", "--artefact-output").help
    builder = option("build", "--builder")
    assert "auto" not in builder.choices and "--push" not in builder.help and "auto" not in builder.help
    assert "as the merge streams" not in option("quantize", "--quantize").help
    assert "make base-image" not in option("package", "--base-image").help
