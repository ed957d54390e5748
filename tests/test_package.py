"""The package step's pure decisions: builder choice and adapter arguments."""

from __future__ import annotations

import pytest

from packager.folders import parse_adapter_arg
from packager.package import choose_builder


@pytest.mark.parametrize(
    ("requested", "push", "expected"),
    [
        ("auto", True, "oci"),
        ("auto", False, "docker"),
        ("docker", True, "docker"),
        ("buildah", False, "buildah"),
    ],
)
def test_auto_builder_pushes_with_oci_and_builds_locally_with_docker(requested, push, expected) -> None:
    assert choose_builder(requested, push) == expected


def test_adapter_arguments(tmp_path) -> None:
    assert parse_adapter_arg("sql=/models/sql-lora") == ("sql", "/models/sql-lora")
    folder = tmp_path / "My Adapter v2"
    folder.mkdir()
    assert parse_adapter_arg(str(folder)) == ("My-Adapter-v2", str(folder))
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_adapter_arg(str(odd))[1] == str(odd)  # an existing folder with '=' in its name is a path


def test_load_time_quantization_is_explained_to_whoever_runs_the_image() -> None:
    from packager.artefact import artefact_spec, load_time_note

    assert load_time_note(artefact_spec("int8")) == []
    (note,) = load_time_note(artefact_spec("bnb-nf4", layout="shared"))
    assert note.startswith("bnb-nf4: the weights are quantized by the runtime") and "exits with code 4" in note
