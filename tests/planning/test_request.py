"""A PackageRequest built in code is checked as the CLI's flags are: every field of its artefact included."""

from __future__ import annotations

import pytest

from packager.artefact.spec import ArtefactSpec
from packager.errors import UserInputError
from packager.planning.request import PackageRequest, check_request
from packager.sizes import Target


def request(**fields) -> PackageRequest:
    return PackageRequest((("a", "/adapters/a"),), fields.pop("layout", "shared"), "rt:1", "acme/a:1", **fields)


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
