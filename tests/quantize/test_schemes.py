"""The scheme registry is the one list: the runtime's own copies (copied into images alone) agree with it, and
an unknown or retired name is refused naming every choice by kind."""

from __future__ import annotations

import pytest

from packager.choices import LAYOUTS
from packager.errors import UserInputError
from packager.quantize.schemes import KINDS, SCHEMES, get_scheme, help_text, quantize_choices, schemes
from packager.runtime.config import LAYOUT_KEYS, LOAD_QUANTIZATIONS
from packager.runtime.vllm_config import VLLM_QUANTIZATIONS


def test_the_runtime_knows_every_load_time_scheme_and_no_other() -> None:
    assert set(LOAD_QUANTIZATIONS) == {"none", *(s.runtime_name for s in schemes("load-time"))}
    vllm = {s.vllm_name for s in schemes("load-time") if s.vllm_name}
    assert set(VLLM_QUANTIZATIONS) == {None, *vllm}


def test_the_runtime_knows_the_layouts() -> None:
    assert set(LAYOUT_KEYS) == set(LAYOUTS)


def test_every_scheme_is_of_a_kind_and_served_somewhere() -> None:
    assert quantize_choices() == ("none", *SCHEMES)
    for scheme in SCHEMES.values():
        assert scheme.kind in KINDS and scheme.devices and scheme.weight_bytes > 0, scheme.name
        assert (scheme.kind == "streamed") == bool(scheme.preset), scheme.name
        assert (scheme.kind == "load-time") == bool(scheme.runtime_name), scheme.name


def test_the_help_names_every_scheme() -> None:
    text = help_text("as the merge streams")
    assert all(name in text for name in SCHEMES)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("int2", r"unknown --quantize 'int2'; use none, or one of compressed-tensors .*: w8a8, w8a16, w4a16, fp8; "),
        ("int4", r"--quantize int4 \(optimum-quanto\) is gone: .* use --quantize w4a16"),
    ],
)
def test_unknown_and_retired_names_are_refused(name, words) -> None:
    with pytest.raises(UserInputError, match=words):
        get_scheme(name)
