"""Check an image's model files against the model signature packager made when it signed the image.

The signature is OpenSSF model-signing's bundle (a Sigstore bundle v0.3: a DSSE envelope around an in-toto
statement listing every signed file's sha256, signed with an EC key). Its file names are paths in the image
without the leading `/` (`models/merged/model.safetensors`, `opt/packager/packager.lock.json`), so the same bundle
verifies the running container, a folder extracted from the image, and OpenSSF's own `model_signing verify`.

The image never carries the signature (an ECDSA signature differs at every signing, and the image's digest must
not): a pod mounts it, with the public key, at SIGNATURE_DIR. When nothing is mounted there, nothing is checked.
"""

from __future__ import annotations

import base64
import json
import os

from .fingerprint import full_sha256

SIGNATURE_DIR = "/opt/packager/signature"
SIGNATURE_FILE = "model.sig"
PUBLIC_KEY_FILE = "key.pub"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"


class SignatureMismatch(Exception):
    """The model signature does not verify, or a file differs from what it signs (message: one line)."""


def signed_digests(bundle: bytes, public_key: bytes) -> dict[str, str]:
    """Verify a model-signing bundle with a PEM public key; returns {path: sha256 hex} of the files it signs."""
    try:
        envelope = json.loads(bundle)["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        payload_type = envelope["payloadType"]
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise SignatureMismatch("the model signature is not a model-signing bundle; sign the image again") from None
    verify_ecdsa(public_key, _pae(payload_type, payload), signature, "model signature")
    statement = json.loads(payload)
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureMismatch(f"the signed statement is not a model signature ({statement.get('predicateType')})")
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"] if r.get("algorithm") == "sha256"}


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def load_public_key(pem: bytes, name: str = "the public key"):
    """A PEM EC public key; SignatureMismatch, naming it as `name`, otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SignatureMismatch(f"{name} is not a PEM public key; pass the key.pub of the signing key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureMismatch(f"{name} is not an EC key; packager signs with EC keys (P-256/384/521)")
    return key


def ecdsa(key):
    """ECDSA with the hash of the key's curve, model-signing's and cosign's rule: SHA-256/384/512 (a private or a
    public EC key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA({256: hashes.SHA256(), 384: hashes.SHA384()}.get(key.curve.key_size, hashes.SHA512()))


def verify_ecdsa(public_key: bytes, message: bytes, signature: bytes, what: str) -> None:
    """Raise SignatureMismatch unless `signature` is the key's ECDSA signature of `message` (`what`: its name)."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    try:
        key.verify(signature, message, ecdsa(key))
    except InvalidSignature:
        raise SignatureMismatch(f"the {what} does not verify with this public key") from None


def check_files(root: str, digests: dict[str, str], folders: tuple[str, ...]) -> None:
    """Raise SignatureMismatch at the first signed file under `root` that is missing or differs, or at a file in
    one of `folders` (image paths) that the signature does not name."""
    for name, digest in sorted(digests.items()):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise SignatureMismatch(f"/{name} is signed but missing from the image; pull the image again by digest")
        if full_sha256(path) != digest:
            raise SignatureMismatch(
                f"/{name} differs from the signed file (sha256); the image was altered after signing: pull it "
                f"again by digest"
            )
    for folder in folders:
        for found in _files_under(os.path.join(root, folder.lstrip("/"))):
            name = os.path.relpath(found, root)
            if name not in digests:
                raise SignatureMismatch(f"/{name} is not signed; it was added to the image after signing")


def _files_under(folder: str) -> list[str]:
    return [os.path.join(d, name) for d, _, names in os.walk(folder) for name in names]


def check_mounted_signature(folders: tuple[str, ...], directory: str | None = None, root: str = "/") -> bool:
    """Verify the image's files against a mounted signature (SIGNATURE_DIR, or env PACKAGER_SIGNATURE_DIR);
    False when none is mounted. `folders`: the image's model folders, where no unsigned file may sit."""
    directory = directory or os.environ.get("PACKAGER_SIGNATURE_DIR") or SIGNATURE_DIR
    bundle_path = os.path.join(directory, SIGNATURE_FILE)
    if not os.path.isfile(bundle_path):
        return False
    key_path = os.path.join(directory, PUBLIC_KEY_FILE)
    if not os.path.isfile(key_path):
        raise SignatureMismatch(f"{bundle_path} is mounted without {PUBLIC_KEY_FILE}; mount the public key beside it")
    with open(bundle_path, "rb") as f, open(key_path, "rb") as k:
        check_files(root, signed_digests(f.read(), k.read()), folders)
    return True
