"""Signing keys for tests: a fresh PEM EC (P-256) private key, as `openssl ecparam -genkey | openssl pkcs8` writes."""

from __future__ import annotations

from pathlib import Path


def write_key(path: Path, curve: str = "SECP256R1") -> Path:
    """Write an unencrypted PKCS#8 PEM EC private key to `path`; returns it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(getattr(ec, curve)())
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path
