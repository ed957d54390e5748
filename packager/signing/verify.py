"""`packager verify-image REF --key PUB`: fetch what `package --sign-key` attached to an image and check it.

In order, stopping at the first mismatch: the image signature (cosign's format) names this manifest; the model
signature verifies with the key; the attached lock and BOM are the signed ones; every file hash the BOM states is
one the lock pins; then every layer is streamed once (nothing written): each layer is its digest, and each
signed file, and each file the lock pins, is in the image with its signed content, with no unsigned file beside
the model's.
"""

from __future__ import annotations

import hashlib
import json
import queue
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

from packager.bom import BOM_FILE
from packager.builders.registry_client import RegistryClient
from packager.errors import UserInputError, VerificationError
from packager.image.paths import LOCK_IN_IMAGE, RUNTIME_ROOT
from packager.image.reference import split_reference
from packager.runtime.signature import SignatureMismatch, signed_digests
from packager.signing import cosign
from packager.signing.attach import BOM_TYPE, BUNDLE_TYPE, IMAGE_SIGNATURE_TYPE, LOCK_TYPE, MANIFEST_TYPES, Registry
from packager.signing.model import SIGNED_FOLDERS
from packager.signing.referrers import list_referrers

BOM_IN_IMAGE = f"{RUNTIME_ROOT}/{BOM_FILE}"
BUFFER = 8 << 20
Log = Callable[[str], None]


@dataclass(frozen=True)
class Verified:
    """What verify-image checked."""

    reference: str
    digest: str
    files: int
    layers: int
    via: str


def verify_image(reference: str, public_pem: bytes, registry: Registry, log: Log) -> Verified:
    """Check the image `reference` and its attached evidence; VerificationError names the first mismatch."""
    client = registry.client()
    body, digest, attached, via = image_referrers(client, reference)
    try:
        _check_image_signature(client, attached, public_pem, digest, reference)
        signed = signed_digests(attached_file(client, attached, BUNDLE_TYPE, reference), public_pem)
    except SignatureMismatch as exc:
        raise VerificationError(f"{reference}: {exc}") from None
    log(f"image signature and model signature verify ({len(signed)} files signed)")
    lock = _check_attached(client, attached, LOCK_TYPE, signed, LOCK_IN_IMAGE, reference)
    bom = _check_attached(client, attached, BOM_TYPE, signed, BOM_IN_IMAGE, reference)
    _check_bom(json.loads(bom), json.loads(lock), hashlib.sha256(lock).hexdigest())
    expected = {**{e["path"].lstrip("/"): e["sha256"] for e in json.loads(lock)["image"]["files"]}, **signed}
    manifest = json.loads(body)
    _blob(client, manifest["config"], "the image config")  # its entrypoint and environment: signed by digest
    layers = manifest["layers"]
    _check_layers(client, layers, expected, set(signed), log)
    return Verified(reference, digest, len(signed), len(layers), via)


def image_referrers(client: RegistryClient, reference: str) -> tuple[bytes, str, dict[str, dict], str]:
    """The image's manifest, its digest, what refers to it (by artifact type) and how that was listed."""
    found = client.get_manifest(split_reference(reference)[1], MANIFEST_TYPES)
    if found is None:
        raise UserInputError(f"{reference} is not in the registry; check the name and tag")
    body, _, digest = found
    if "@" in reference and split_reference(reference)[1] != digest:
        raise VerificationError(f"the registry's manifest for {reference} is {digest}: it was replaced")
    referrers, via = list_referrers(client, digest)
    return body, digest, {entry.get("artifactType"): entry for entry in referrers}, via


def _check_image_signature(client: RegistryClient, attached: dict, public_pem: bytes, digest: str, ref: str) -> None:
    entry = attached.get(IMAGE_SIGNATURE_TYPE)
    found = client.get_manifest(entry["digest"] if entry else cosign.signature_tag(digest), MANIFEST_TYPES)
    if found is None:
        raise VerificationError(f"{ref} has no image signature; sign it with `packager package --sign-key`")
    layer = json.loads(found[0])["layers"][0]
    payload = _blob(client, layer, "the image signature")
    signature = layer.get("annotations", {}).get(cosign.SIGNATURE_ANNOTATION, "")
    cosign.verify_image_signature(payload, signature, public_pem, digest)


def attached_file(client: RegistryClient, attached: dict, artifact_type: str, reference: str) -> bytes:
    """The file the referrer of `artifact_type` carries, checked against its digest."""
    entry = attached.get(artifact_type)
    if entry is None:
        raise VerificationError(f"{reference} has no {artifact_type} attached; sign it with `package --sign-key`")
    found = client.get_manifest(entry["digest"], MANIFEST_TYPES)
    if found is None:
        raise VerificationError(f"the {artifact_type} attached to {reference} is gone from the registry")
    layer = json.loads(found[0])["layers"][0]
    return _blob(client, layer, layer.get("annotations", {}).get("org.opencontainers.image.title", artifact_type))


def _blob(client: RegistryClient, layer: dict, what: str) -> bytes:
    data = client.get_blob(layer["digest"])
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != layer["digest"]:
        raise VerificationError(f"{what} in the registry is not the blob {layer['digest']}: it was replaced")
    return data


def _check_attached(client, attached: dict, kind: str, signed: dict, image_path: str, reference: str) -> bytes:
    data = attached_file(client, attached, kind, reference)
    name = image_path.lstrip("/")
    if signed.get(name) != hashlib.sha256(data).hexdigest():
        raise VerificationError(f"the {name.rsplit('/', 1)[-1]} attached to {reference} is not the signed one")
    return data


def _check_bom(bom: dict, lock: dict, lock_sha256: str) -> None:
    """Every sha256 the BOM states for a file is one the lock pins (or the lock's own)."""
    pinned = {*_sha256s(lock), lock_sha256}
    for component in bom.get("components", []):
        for found in _components(component):
            for value in (h["content"] for h in found.get("hashes", []) if h.get("alg") == "SHA-256"):
                if value not in pinned:
                    raise VerificationError(f"the BOM's {found.get('name')} (sha256 {value[:12]}) is not in the lock")


def _components(component: dict) -> list[dict]:
    return [component, *(c for child in component.get("components", []) for c in _components(child))]


def _sha256s(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("sha256",) and isinstance(v, str)] + [
            s for v in node.values() for s in _sha256s(v)
        ]
    return [s for v in node for s in _sha256s(v)] if isinstance(node, list) else []


def _check_layers(client: RegistryClient, layers: list[dict], expected: dict, signed: set, log: Log) -> None:
    """Stream every layer in order; the image's final files are compared with `expected` ({path: sha256})."""
    final: dict[str, str | None] = {}
    for number, layer in enumerate(layers, 1):
        log(f"reading layer {number}/{len(layers)} ({layer['size'] / 1e6:.1f} MB)")
        digest = _read_layer(client.blob_stream(layer["digest"]), expected, final)
        if digest != layer["digest"]:
            bad = next((p for p, h in final.items() if p in expected and h != expected[p]), None)
            where = f": /{bad} differs from the signed file" if bad else ""
            raise VerificationError(f"layer {layer['digest']} in the registry is not that blob{where}")
    for path, digest in sorted(expected.items()):
        if final.get(path) != digest:
            state = "missing from" if final.get(path) is None else "different in"
            kind = "signed" if path in signed else "locked"
            raise VerificationError(f"/{path} is {state} the image (sha256 {digest[:12]} {kind})")
    extra = sorted(p for p, h in final.items() if h and p.startswith(SIGNED_FOLDERS) and p not in signed)
    if extra:
        raise VerificationError(f"/{extra[0]} is in the image but not signed")


class _Hashing:
    """A read-through stream over a layer blob: it reads the blob in big chunks, which a second thread hashes (the
    layer's digest, computed while the same bytes are untarred and their files hashed: hashlib releases the GIL),
    and hands tarfile the small reads it asks for."""

    def __init__(self, raw) -> None:
        self.raw, self.sha256 = raw, hashlib.sha256()
        self._chunk, self._at = b"", 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._hash, daemon=True)
        self._thread.start()

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the blob (fewer at a chunk's end: tarfile reads again)."""
        if self._at >= len(self._chunk):
            self._chunk, self._at = self.raw.read(BUFFER), 0
            if not self._chunk:
                return b""
            self._queue.put(self._chunk)
        end = len(self._chunk) if size < 0 else self._at + size
        data = self._chunk[self._at : end]
        self._at += len(data)
        return data

    def digest(self) -> str:
        """Drain the blob and return its digest."""
        self._at = len(self._chunk)
        while self.read(BUFFER):
            self._at = len(self._chunk)  # the tar's end padding counts toward the blob's digest
        self._queue.put(None)
        self._thread.join()
        return f"sha256:{self.sha256.hexdigest()}"

    def _hash(self) -> None:
        while (data := self._queue.get()) is not None:
            self.sha256.update(data)


def _read_layer(stream, expected: dict, final: dict) -> str:
    """Untar one layer blob as it streams: `final` gets the sha256 of each file of interest (None where a whiteout
    removes it); returns the blob's digest."""
    hashing = _Hashing(stream)
    try:
        with tarfile.open(fileobj=hashing, mode="r|*") as tar:  # 10 KB reads: a bigger buffer is copied per file
            for member in tar:
                _account(tar, member, expected, final)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise VerificationError(f"a layer of the image is not a readable tar ({exc}); it was replaced") from None
    finally:
        digest = hashing.digest()
    return digest


def _account(tar: tarfile.TarFile, member: tarfile.TarInfo, expected: dict, final: dict) -> None:
    path = member.name.removeprefix("./").lstrip("/")
    folder, _, name = path.rpartition("/")
    if name.startswith(".wh."):
        gone = f"{folder}/{name[4:]}".lstrip("/")
        final.update({p: None for p in final if p == gone or p.startswith(gone + "/")})
    elif member.isfile() and (path in expected or path.startswith(SIGNED_FOLDERS)):
        final[path] = _member_sha256(tar, member)


def _member_sha256(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    f = tar.extractfile(member)
    while chunk := f.read(BUFFER):
        digest.update(chunk)
    return digest.hexdigest()
