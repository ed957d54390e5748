"""OCI 1.1 referrers: artifacts whose `subject` is an image manifest, and how they are found again.

A registry with the referrers API indexes an artifact when it is stored (it answers with an OCI-Subject
header) and lists it at /v2/<repo>/referrers/<digest>. One without it (CNCF distribution 2.8, Debian's
docker-registry) gets the tag-schema fallback of the OCI distribution spec: an image index under the tag
`sha256-<hex>` that lists every referrer, updated by packager after each store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from packager.builders.registry_client import RegistryClient

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Artifact:
    """One file to attach: its artifact type, the file's name and bytes."""

    artifact_type: str
    title: str
    data: bytes


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    """An OCI descriptor of `data`."""
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data), **extra}


def artifact_manifest(artifact: Artifact, subject: dict) -> bytes:
    """An OCI 1.1 artifact manifest: empty config, one layer (the file), `subject` the image; no timestamp, so
    the same file on the same image gives the same digest."""
    layer = descriptor(artifact.artifact_type, artifact.data, annotations={TITLE: artifact.title})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact.artifact_type,
        "config": {**descriptor(EMPTY_TYPE, EMPTY_BLOB), "data": "e30="},
        "layers": [layer],
        "subject": subject,
        "annotations": {TITLE: artifact.title},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def attach(client: RegistryClient, subject: dict, manifest: bytes, artifact_type: str) -> tuple[str, str]:
    """Store a manifest that refers to `subject` and make it findable; returns (its digest, "referrers API" or
    "tag schema")."""
    digest, indexed = client.put_referrer(manifest, MANIFEST_TYPE)
    if indexed:
        return digest, "referrers API"
    entry = {**descriptor(MANIFEST_TYPE, manifest), "artifactType": artifact_type}
    annotations = json.loads(manifest).get("annotations")
    if annotations:
        entry["annotations"] = annotations
    _add_to_fallback(client, subject["digest"], entry)
    return digest, "tag schema"


def fallback_tag(digest: str) -> str:
    """The tag-schema fallback's tag for `sha256:<hex>`."""
    return digest.replace(":", "-")


def _add_to_fallback(client: RegistryClient, subject_digest: str, entry: dict) -> None:
    found = client.get_manifest(fallback_tag(subject_digest), (INDEX_TYPE,))
    index = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}
    manifests = [m for m in index.get("manifests", []) if m.get("digest") != entry["digest"]]
    index["manifests"] = [*manifests, entry]
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    client.put_manifest(fallback_tag(subject_digest), body, INDEX_TYPE)


def list_referrers(client: RegistryClient, subject_digest: str) -> tuple[list[dict], str]:
    """What refers to `subject_digest`: the referrers API's list, else the fallback tag's; and which was read."""
    listed = client.referrers(subject_digest)
    if listed:
        return listed, "referrers API"
    found = client.get_manifest(fallback_tag(subject_digest), (INDEX_TYPE,))
    return (json.loads(found[0]).get("manifests", []) if found else []), "tag schema"


def upload_artifact(client: RegistryClient, artifact: Artifact) -> None:
    """Upload the blobs an artifact manifest names (the empty config and the file)."""
    client.upload_bytes(EMPTY_BLOB)
    client.upload_bytes(artifact.data)
