"""The image signature in cosign's format: what is signed, and that it verifies only for that manifest and key."""

from __future__ import annotations

import json

import pytest

from packager.runtime.signature import SignatureMismatch
from packager.signing import cosign
from packager.signing.keys import load_signing_key
from tests.signing_keys import write_key

DIGEST = "sha256:" + "ab" * 32


def test_the_payload_is_cosign_simple_signing_and_the_same_each_time() -> None:
    payload = cosign.simple_signing_payload("127.0.0.1:5000/acme/demo", DIGEST)
    assert payload == cosign.simple_signing_payload("127.0.0.1:5000/acme/demo", DIGEST)
    critical = json.loads(payload)["critical"]
    assert critical == {
        "identity": {"docker-reference": "127.0.0.1:5000/acme/demo"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": "cosign container image signature",
    }
    assert cosign.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    config = json.loads(cosign.signature_config(payload))
    assert config["rootfs"]["diff_ids"][0].startswith("sha256:") and "created" in config


def test_it_verifies_for_its_manifest_and_key_only(tmp_path) -> None:
    key = load_signing_key(str(write_key(tmp_path / "k.pem")))
    payload = cosign.simple_signing_payload("r/demo", DIGEST)
    signature = cosign.sign_payload(payload, key)
    cosign.verify_image_signature(payload, signature, key.public_pem, DIGEST)
    with pytest.raises(SignatureMismatch, match="is for manifest"):
        cosign.verify_image_signature(payload, signature, key.public_pem, "sha256:" + "cd" * 32)
    other = load_signing_key(str(write_key(tmp_path / "o.pem")))
    with pytest.raises(SignatureMismatch, match="does not verify"):
        cosign.verify_image_signature(payload, signature, other.public_pem, DIGEST)
    with pytest.raises(SignatureMismatch, match="does not verify"):
        cosign.verify_image_signature(payload.replace(b"r/demo", b"r/evil"), signature, key.public_pem, DIGEST)
