"""`package --sign-key`: sign what was pushed and attach the evidence to it.

After the push: the model signature over the context's served files, the lock and the BOM (model.py); the
cosign signature over the pushed manifest's digest (cosign.py); then the BOM, the lock, the model signature and
the image signature stored beside the image as OCI referrers (referrers.py). The signature and the public key
are written to WORK/signature for pods to mount; the private key is only ever read where it lies.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from packager.bom import BOM_FILE
from packager.builders.registry_client import RegistryClient
from packager.errors import RegistryError
from packager.image.reference import registry_host
from packager.model_files import LOCK_FILE
from packager.runtime.signature import PUBLIC_KEY_FILE, SIGNATURE_FILE
from packager.signing import cosign
from packager.signing.keys import SigningKey
from packager.signing.model import sign_model
from packager.signing.referrers import MANIFEST_TYPE, Artifact, artifact_manifest, attach, descriptor, upload_artifact

BOM_TYPE = "application/vnd.cyclonedx+json"
LOCK_TYPE = "application/vnd.packager.lock.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IMAGE_SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
MANIFEST_TYPES = (MANIFEST_TYPE, "application/vnd.docker.distribution.manifest.v2+json")


@dataclass(frozen=True)
class Registry:
    """Where the image was pushed: `repository` with its host, and the credentials used."""

    repository: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def client(self) -> RegistryClient:
        """A client for the repository."""
        host = registry_host(self.repository)
        return RegistryClient(host, self.repository.removeprefix(f"{host}/"), self.username, self.password)


@dataclass(frozen=True)
class SignReport:
    """What signing made: the files beside the work folder, what was attached (title -> manifest digest), how."""

    signature: str
    public_key: str
    files_signed: int
    attached: dict[str, str]
    via: str
    signature_tag: str

    def to_dict(self) -> dict:
        """The report's `signature` section."""
        return self.__dict__.copy()


def sign_pushed(context: str, lock: dict, key: SigningKey, registry: Registry, digest: str, work: str) -> SignReport:
    """Sign the pushed image `digest` and its model files, attach BOM, lock and signatures as its referrers."""
    folder = os.path.join(work, "signature")
    os.makedirs(folder, exist_ok=True)
    pinned = {entry["path"]: entry["sha256"] for entry in lock["image"]["files"] if entry.get("sha256")}
    model = sign_model(context, key, os.path.join(folder, SIGNATURE_FILE), pinned)
    public_key = os.path.join(folder, PUBLIC_KEY_FILE)
    with open(public_key, "wb") as f:
        f.write(key.public_pem)
    client = registry.client()
    found = client.get_manifest(digest, MANIFEST_TYPES)
    if found is None:
        raise RegistryError(f"the pushed image {registry.repository}@{digest} is not in the registry; push it again")
    subject = descriptor(found[1], found[0])
    artifacts = [
        Artifact(BOM_TYPE, BOM_FILE, Path(context, BOM_FILE).read_bytes()),
        Artifact(LOCK_TYPE, LOCK_FILE, Path(context, LOCK_FILE).read_bytes()),
        Artifact(BUNDLE_TYPE, SIGNATURE_FILE, model.bundle()),
    ]
    attached, via = {}, ""
    for artifact in artifacts:
        upload_artifact(client, artifact)
        manifest = artifact_manifest(artifact, subject)
        attached[artifact.title], via = attach(client, subject, manifest, artifact.artifact_type)
    attached["image signature"] = _attach_image_signature(client, registry.repository, subject, key)
    return SignReport(model.path, public_key, len(model.digests), attached, via, cosign.signature_tag(digest))


def _attach_image_signature(client: RegistryClient, repository: str, subject: dict, key: SigningKey) -> str:
    """cosign's signature manifest under its `.sig` tag, also listed as a referrer of the image."""
    payload = cosign.simple_signing_payload(repository, subject["digest"])
    config = cosign.signature_config(payload)
    for blob in (payload, config):
        client.upload_bytes(blob)
    annotations = {cosign.SIGNATURE_ANNOTATION: cosign.sign_payload(payload, key)}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor(cosign.PAYLOAD_TYPE, payload, annotations=annotations)],
        "subject": subject,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    client.put_manifest(cosign.signature_tag(subject["digest"]), body, MANIFEST_TYPE)
    digest, _ = attach(client, subject, body, IMAGE_SIGNATURE_TYPE)
    return digest
