"""OCI 1.1 referrers through the referrers API. The tag-schema fallback runs against Debian's docker-registry 2.8 in
tests/e2e/test_signed_images.py; no registry with the referrers API installs here (none on PyPI, npm or Debian:
zot and distribution 3 are Go binaries from GitHub), so this file stands one up in-process: the OCI distribution
spec's endpoints packager uses, nothing more. It is a stand-in for a real OCI 1.1 registry, and says so."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from packager.builders.registry_client import RegistryClient
from packager.signing.referrers import (
    INDEX_TYPE,
    MANIFEST_TYPE,
    Artifact,
    artifact_manifest,
    attach,
    descriptor,
    fallback_tag,
    list_referrers,
    upload_artifact,
)


class _Registry(BaseHTTPRequestHandler):
    """Blobs, manifests and GET /v2/<repo>/referrers/<digest>, in memory (OCI distribution spec 1.1)."""

    blobs: ClassVar[dict[str, bytes]] = {}
    manifests: ClassVar[dict[str, tuple[bytes, str]]] = {}
    uploads: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args) -> None:
        """Quiet."""

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        """Blob existence."""
        self._send(200 if self.path.rsplit("/", 1)[-1] in self.blobs else 404)

    def do_POST(self) -> None:
        """Start an upload."""
        self.uploads[str(len(self.uploads))] = b""
        self._send(202, headers={"Location": f"/upload/{len(self.uploads) - 1}"})

    def do_PATCH(self) -> None:
        """An upload's chunk."""
        key = self.path.rsplit("/", 1)[-1]
        self.uploads[key] += self._body()
        self._send(202, headers={"Location": self.path})

    def do_PUT(self) -> None:
        """Close an upload, or store a manifest (and say OCI-Subject when it has a subject)."""
        if self.path.startswith("/upload/"):
            key, digest = self.path.split("?digest=")
            self.blobs[digest.replace("%3A", ":")] = self.uploads[key.rsplit("/", 1)[-1]] + self._body()
            return self._send(201)
        body, reference = self._body(), self.path.rsplit("/", 1)[-1]
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        self.manifests[reference] = self.manifests[digest] = (body, self.headers["Content-Type"])
        subject = json.loads(body).get("subject")
        indexed = {"OCI-Subject": subject["digest"]} if subject else {}
        self._send(201, headers={"Docker-Content-Digest": digest, **indexed})

    def do_GET(self) -> None:
        """Blobs, manifests, and the referrers API."""
        kind, reference = self.path.split("/")[-2:]
        if kind == "referrers":
            found = [
                {**descriptor(media, body), "artifactType": json.loads(body).get("artifactType")}
                for key, (body, media) in self.manifests.items()
                if key.startswith("sha256:") and json.loads(body).get("subject", {}).get("digest") == reference
            ]
            return self._send(200, json.dumps({"schemaVersion": 2, "manifests": found}).encode())
        if kind == "blobs":
            return self._send(200, self.blobs[reference]) if reference in self.blobs else self._send(404)
        if reference not in self.manifests:
            return self._send(404)
        body, media = self.manifests[reference]
        self._send(200, body, {"Content-Type": media})


@pytest.fixture()
def registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield RegistryClient(f"127.0.0.1:{server.server_address[1]}", "acme/demo")
    server.shutdown()
    for store in (_Registry.blobs, _Registry.manifests, _Registry.uploads):
        store.clear()


def test_a_registry_with_the_referrers_api_indexes_the_artifacts_itself(registry) -> None:
    image = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    registry.put_manifest("1", image, MANIFEST_TYPE)
    subject = descriptor(MANIFEST_TYPE, image)
    artifact = Artifact("application/vnd.cyclonedx+json", "bom.cdx.json", b'{"bomFormat": "CycloneDX"}')
    upload_artifact(registry, artifact)
    digest, via = attach(registry, subject, artifact_manifest(artifact, subject), artifact.artifact_type)
    assert via == "referrers API"
    assert registry.get_manifest(fallback_tag(subject["digest"]), (INDEX_TYPE,)) is None  # no fallback tag written
    listed, read_via = list_referrers(registry, subject["digest"])
    assert read_via == "referrers API" and [e["digest"] for e in listed] == [digest]
    assert listed[0]["artifactType"] == "application/vnd.cyclonedx+json"
