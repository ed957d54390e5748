"""A PackageRequest built in code is checked as the CLI's flags are: every field of its artefact included."""

from __future__ import annotations

import pytest

from packager.artefact.spec import ArtefactSpec
from packager.errors import UserInputError
from packager.planning.request import PackageRequest, check_request
from packager.sizes import Target
from tests.requests import package_request


def request(**fields) -> PackageRequest:
    fields = {"layout": "shared", "base_image": "rt:1", "tag": "acme/a:1", **fields}
    return package_request((("a", "/adapters/a"),), fields.pop("layout"), fields.pop("base_image"), **fields)


def test_calibration_asked_of_a_shared_image_is_refused_not_dropped() -> None:
    """`check_request` once re-derived the artefact without `calibrate`: a shared request with GPTQ passed and the
    calibration was silently dropped."""
    with pytest.raises(UserInputError, match=r"--calibrate runs GPTQ .* in the baked layout"):
        check_request(request(artefact=ArtefactSpec("w8a8", calibrate="")))


def test_the_accuracy_gate_and_the_sizing_flags_are_checked_too() -> None:
    with pytest.raises(UserInputError, match="--max-kl must be positive"):
        check_request(request(artefact=ArtefactSpec("w8a8", max_kl=0.0), layout="baked"))
    with pytest.raises(UserInputError, match=r"--gpu-memory-utilization 1\.5 is out of range"):
        check_request(request(target=Target(gpu_memory_utilization=1.5)))
    with pytest.raises(UserInputError, match="--kv-tokens and --concurrency both reserve KV cache"):
        check_request(request(target=Target(kv_tokens=10, concurrency=2)))
    with pytest.raises(UserInputError, match="--tokens-per-request sizes --concurrency's sequences"):
        check_request(request(target=Target(tokens_per_request=4096)))
    with pytest.raises(UserInputError, match="unknown --kv-cache-dtype 'int4'"):
        check_request(request(target=Target(kv_cache_dtype="int4")))


# a value check_request must refuse, for every field of the artefact part: a new field without a check fails here
BAD_ARTEFACT = {
    "quantize": ("bogus", "unknown --quantize 'bogus'"),
    "export": ("tar", "unknown --export 'tar'"),
    "granularity": ("per-row", "unknown --onnx-granularity 'per-row'"),
    "onnx_atol": (0.0, "--onnx-atol must be positive"),
    "max_accuracy_loss": (-1.0, "--max-accuracy-loss must be positive"),
    "calibrate": ("", "--calibrate runs GPTQ"),  # with no --quantize to calibrate
    "max_kl": (0.0, "--max-kl must be positive"),
    "min_top1": (1.5, "--min-top1 in"),
}


def test_every_artefact_field_is_checked_by_field_name() -> None:
    import dataclasses

    assert set(BAD_ARTEFACT) == {f.name for f in dataclasses.fields(ArtefactSpec)}
    for name, (value, words) in BAD_ARTEFACT.items():
        with pytest.raises(UserInputError, match=words):
            check_request(request(artefact=ArtefactSpec(**{name: value}), layout="baked"))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"layout": "fat"}, "unknown layout 'fat'"),
        ({"device": "tpu"}, "unknown --device 'tpu'"),
        ({"port": 0}, "port 0 is out of range"),
        ({"builder": "kaniko"}, "unknown builder 'kaniko'; use one of auto, docker, buildah, oci"),
        ({"push": True}, "--push needs a tag that names a registry"),
        ({"base_image": "Bad Image"}, "Bad Image"),
    ],
)
def test_the_serving_and_image_parts_are_checked(fields, words) -> None:
    with pytest.raises(UserInputError, match=words):
        check_request(request(**{"layout": "baked", **fields}))
