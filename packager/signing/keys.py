"""The user's signing key: a PEM EC private key (P-256, P-384 or P-521), the kind both model-signing's key signer
and cosign's `--key` verification take. It is read where it lies and never copied: only its public half is
written anywhere (beside the signature, into the admission policy)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from packager.errors import UserInputError

SIGN_KEY_ENV = "PACKAGER_SIGN_KEY"
MAKE_KEY = "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out sign.pem"


@dataclass(frozen=True)
class SigningKey:
    """Where the private key lies, and its public key (PEM)."""

    path: str
    public_pem: bytes = field(repr=False)

    def private_key(self):
        """The loaded private key (read again from `path`; never kept in a plan or report)."""
        return _load(self.path)


def load_signing_key(path: str) -> SigningKey:
    """Read and check --sign-key; refused in one line unless it is an unencrypted PEM EC private key."""
    from cryptography.hazmat.primitives import serialization

    public = _load(path).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(os.path.abspath(path), pem)


def _load(path: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserInputError(f"--sign-key {path} cannot be read ({exc.strerror}); pass the PEM private key") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UserInputError(
            f"--sign-key {path} is encrypted; pass an unencrypted PEM key (openssl pkcs8 -topk8 -nocrypt)"
        ) from None
    except ValueError:
        raise UserInputError(f"--sign-key {path} is not a PEM private key; make one with: {MAKE_KEY}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserInputError(
            f"--sign-key {path} is not an EC key; model-signing and cosign keys are EC (P-256): {MAKE_KEY}"
        )
    return key

