"""A small OCI distribution client: blob checks, streamed uploads and manifests, with Basic or Bearer auth.

Uploads stream in chunks (PATCH) while the sha256 is computed, so a multi-GB layer needs no temp file and no
second pass; layers already in the repository are never sent again.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import urllib.parse
from collections.abc import Iterable

from packager.errors import RegistryAuthError, RegistryError

LOCAL_HOSTS = ("127.", "localhost")
CHUNK_BYTES = 64 << 20


class RegistryClient:
    """One repository on one registry (plain HTTP for 127.0.0.0/8 and localhost, HTTPS otherwise)."""

    def __init__(self, registry: str, repository: str, username: str | None = None, password: str | None = None):
        self.registry, self.repository = registry, repository
        self._credentials = (username, password or "") if username is not None else None
        self._auth_header: str | None = None
        self._secure = not registry.startswith(LOCAL_HOSTS)
        self._connection: http.client.HTTPConnection | None = None

    def blob_exists(self, digest: str) -> bool:
        """Whether the repository already has the blob `digest` (a HEAD request)."""
        status, _, _ = self._request("HEAD", f"/v2/{self.repository}/blobs/{digest}")
        return status == 200

    def mount_blob(self, digest: str, source: str) -> bool:
        """Ask the registry to link `digest` from repository `source` into this one (no bytes sent); False when
        it cannot (then the upload it opened instead is cancelled)."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        status, headers, _ = self._request("POST", f"/v2/{self.repository}/blobs/uploads/?{query}")
        if status == 201:
            return True
        if status == 202 and headers.get("location"):
            self._request("DELETE", headers["location"])
        return False

    def upload(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Stream a blob; returns its (digest, size). The registry checks the digest when the upload closes."""
        status, headers, body = self._request("POST", f"/v2/{self.repository}/blobs/uploads/")
        self._expect(status, (202,), "start an upload", body)
        location, digest, size = headers["location"], hashlib.sha256(), 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            status, headers, body = self._request(
                "PATCH", location, chunk, {"Content-Type": "application/octet-stream"}
            )
            self._expect(status, (202,), "upload a chunk", body)
            location = headers["location"]
        name = f"sha256:{digest.hexdigest()}"
        status, _, body = self._request("PUT", _with_query(location, digest=name), b"")
        self._expect(status, (201,), "finish an upload", body)
        return name, size

    def upload_bytes(self, data: bytes) -> str:
        """Upload a small blob unless the repository has it already; returns its digest."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if not self.blob_exists(digest):
            self.upload([data])
        return digest

    def put_manifest(self, reference: str, manifest: bytes, media_type: str) -> str:
        """Store `manifest` under `reference` (a tag); returns the manifest digest the registry reports."""
        status, headers, body = self._request(
            "PUT", f"/v2/{self.repository}/manifests/{reference}", manifest, {"Content-Type": media_type}
        )
        self._expect(status, (201,), "store the manifest", body)
        return headers.get("docker-content-digest") or f"sha256:{hashlib.sha256(manifest).hexdigest()}"

    def put_referrer(self, manifest: bytes, media_type: str) -> tuple[str, bool]:
        """Store a manifest that has a `subject` by its digest; returns (digest, whether the registry indexed it
        for the referrers API — it says so with an OCI-Subject header)."""
        digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
        status, headers, body = self._request(
            "PUT", f"/v2/{self.repository}/manifests/{digest}", manifest, {"Content-Type": media_type}
        )
        self._expect(status, (201,), "store the manifest", body)
        return digest, "oci-subject" in headers

    def get_manifest(self, reference: str, accept: tuple[str, ...]) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of the manifest `reference` (tag or digest); None when there is none."""
        status, headers, body = self._request(
            "GET", f"/v2/{self.repository}/manifests/{reference}", headers={"Accept": ", ".join(accept)}
        )
        if status == 404:
            return None
        self._expect(status, (200,), f"read the manifest {reference}", body)
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        return body, headers.get("content-type", "").split(";")[0], digest

    def referrers(self, digest: str) -> list[dict] | None:
        """The referrers API's index of what refers to `digest`; None when the registry has no referrers API."""
        status, _, body = self._request("GET", f"/v2/{self.repository}/referrers/{digest}")
        if status in (404, 405) or not body.strip().startswith(b"{"):
            return None
        self._expect(status, (200,), "list the referrers", body)
        return json.loads(body).get("manifests", [])

    def get_blob(self, digest: str) -> bytes:
        """A blob's bytes (small ones: manifests' configs, attached artifacts)."""
        status, _, body = self._request("GET", f"/v2/{self.repository}/blobs/{digest}")
        self._expect(status, (200,), f"read the blob {digest}", body)
        return body

    def blob_stream(self, digest: str):
        """A file-like stream of a blob (a layer read once, never held in memory); redirects are followed."""
        import urllib.request

        status, headers, body = self._send_streaming(f"/v2/{self.repository}/blobs/{digest}")
        if status in (301, 302, 303, 307, 308):
            return urllib.request.urlopen(headers["location"], timeout=600)
        return body

    def _send_streaming(self, path: str):
        """A GET on a connection of its own: the response is read by the caller, after other requests."""
        headers = {"Authorization": self._auth_header} if self._auth_header else {}
        connection = self._new_connection()
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"registry {self.registry} is unreachable ({exc}); check that it runs") from None
        if response.status not in (200, 301, 302, 303, 307, 308):
            self._expect(response.status, (200,), f"read the blob {path.rsplit('/', 1)[-1]}", response.read())
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        for _ in range(2):
            status, response_headers, data = self._send(method, path, body, headers or {})
            if status != 401 or not self._authenticate(response_headers.get("www-authenticate", "")):
                return status, response_headers, data
        return status, response_headers, data

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        url = urllib.parse.urlsplit(path)
        target = f"{url.path}?{url.query}" if url.query else url.path
        headers = {**headers, **({"Authorization": self._auth_header} if self._auth_header else {})}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            connection = self._connect()
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._connection = None
            raise RegistryError(f"registry {self.registry} is unreachable ({exc}); check that it runs") from None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = self._new_connection()
        return self._connection

    def _new_connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
        return kind(self.registry, timeout=600)

    def _authenticate(self, challenge: str) -> bool:
        """Answer a 401: Basic with the credentials, or Bearer by fetching a token from the realm."""
        if self._credentials is None or (self._auth_header and challenge.lower().startswith("basic")):
            raise RegistryAuthError(
                f"registry {self.registry} refused the credentials (unauthorized); pass --username and "
                f"--password-stdin, or run `docker login {self.registry}`"
            )
        basic = "Basic " + base64.b64encode(":".join(self._credentials).encode()).decode()
        if challenge.lower().startswith("basic"):
            self._auth_header = basic
            return True
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        token = _fetch_token(f"{params.get('realm', '')}?{query}", basic, self.registry)
        self._auth_header = f"Bearer {token}"
        return True

    @staticmethod
    def _expect(status: int, ok: tuple[int, ...], what: str, body: bytes) -> None:
        if status in ok:
            return
        message = body.decode(errors="replace")[:200]
        if status in (401, 403):
            raise RegistryAuthError(f"the registry refused to {what} (HTTP {status}): {message}; check the credentials")
        raise RegistryError(f"the registry could not {what} (HTTP {status}): {message}")


def _with_query(location: str, **params: str) -> str:
    separator = "&" if "?" in location else "?"
    return location + separator + urllib.parse.urlencode(params)


def _fetch_token(url: str, basic: str, registry: str) -> str:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": basic})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())
    except OSError as exc:
        raise RegistryAuthError(f"registry {registry} refused the credentials ({exc}); check them") from None
    return data.get("token") or data.get("access_token") or ""
