"""The image signature in cosign's format: a "simple signing" payload naming the image manifest's digest, signed
with ECDSA, stored as a one-layer manifest whose layer annotation carries the signature, under the tag
`sha256-<digest>.sig` where cosign, Kyverno `verifyImages` and Sigstore's policy-controller look for it
(`cosign verify --key key.pub --insecure-ignore-tlog IMAGE` checks it)."""

from __future__ import annotations

import base64
import hashlib
import json

from packager.runtime.signature import SignatureMismatch, ecdsa, verify_ecdsa
from packager.signing.keys import SigningKey

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_KIND = "cosign container image signature"


def signature_tag(manifest_digest: str) -> str:
    """cosign's tag for the signatures of `sha256:<hex>`."""
    return manifest_digest.replace(":", "-") + ".sig"


def simple_signing_payload(repository: str, manifest_digest: str) -> bytes:
    """What cosign signs: the image's repository and manifest digest (no timestamp, so it is the same each time)."""
    critical = {
        "identity": {"docker-reference": repository},
        "image": {"docker-manifest-digest": manifest_digest},
        "type": SIGNATURE_KIND,
    }
    return json.dumps({"critical": critical, "optional": None}, separators=(",", ":")).encode()


def sign_payload(payload: bytes, key: SigningKey) -> str:
    """The base64 ECDSA signature of `payload`."""
    private = key.private_key()
    return base64.b64encode(private.sign(payload, ecdsa(private))).decode()


def signature_config(payload: bytes) -> bytes:
    """The config blob of a cosign signature manifest, as cosign writes it (no real dates)."""
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    config = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def verify_image_signature(payload: bytes, signature: str, public_pem: bytes, manifest_digest: str) -> None:
    """Raise SignatureMismatch unless `signature` over `payload` verifies with the key and the payload names
    `manifest_digest`."""
    try:
        raw = base64.b64decode(signature)
    except ValueError:
        raise SignatureMismatch("the image signature does not verify with this public key") from None
    verify_ecdsa(public_pem, payload, raw, "image signature")
    signed = json.loads(payload).get("critical", {}).get("image", {}).get("docker-manifest-digest")
    if signed != manifest_digest:
        raise SignatureMismatch(f"the image signature is for manifest {signed}, not this image's {manifest_digest}")

