"""The model signature: OpenSSF model-signing's bundle over what the image serves — the model's files, each
adapter's, runtime.json, the lock and the BOM — named by their paths in the image (`models/merged/...`).

The files are signed where the build context holds them: a folder of symlinks mirrors the image's paths, so
nothing is copied, and the bundle verifies the image's own files (packager_runtime/signature.py, `verify-image`,
OpenSSF's `model_signing verify` on a folder taken out of the image).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.bom import BOM_FILE
from packager.errors import UserInputError
from packager.image.dockerfile import parse_dockerfile
from packager.image.paths import ADAPTERS_DIR, LOCK_IN_IMAGE, MODEL_DIR, RUNTIME_JSON_IN_IMAGE, RUNTIME_ROOT
from packager.runtime.signature import signed_digests
from packager.signing.keys import SigningKey

SUBJECT = "image"
SIGNED_FOLDERS = (f"{MODEL_DIR.lstrip('/')}/", f"{ADAPTERS_DIR.lstrip('/')}/")  # every file here is signed
SIGNED_CONFIG = (LOCK_IN_IMAGE, RUNTIME_JSON_IN_IMAGE, f"{RUNTIME_ROOT}/{BOM_FILE}")


@dataclass(frozen=True)
class ModelSignature:
    """A written model-signing bundle and the files it signs ({image path without '/': sha256})."""

    path: str
    digests: dict[str, str]

    def bundle(self) -> bytes:
        """The bundle's bytes."""
        return Path(self.path).read_bytes()


def signed_files(context: str) -> dict[str, str]:
    """{image path without '/': file in the context} for every file the model signature covers."""
    with open(os.path.join(context, "Dockerfile")) as f:
        recipe = parse_dockerfile(f.read())
    found: dict[str, str] = {}
    for layer in recipe.layers:
        for source in layer.sources:
            root = os.path.join(context, source)
            for folder, _, names in os.walk(root):
                for name in names:
                    path = os.path.join(folder, name)
                    image_path = "/" + os.path.relpath(path, root)
                    if _is_signed(image_path):
                        found[image_path.lstrip("/")] = path  # a later layer's file replaces an earlier one's
    return found


def _is_signed(image_path: str) -> bool:
    return image_path.lstrip("/").startswith(SIGNED_FOLDERS) or image_path in SIGNED_CONFIG


def sign_model(context: str, key: SigningKey, output: str, pinned: dict[str, str]) -> ModelSignature:
    """Sign the context's served files with model-signing into `output`; `pinned` ({image path: sha256}, the
    lock's) must agree with what was signed, so a file changed since it was pinned is refused, not signed."""
    import model_signing

    files = signed_files(context)
    with tempfile.TemporaryDirectory(prefix="signed-", dir=os.path.dirname(os.path.abspath(output))) as scratch:
        stage = os.path.join(scratch, SUBJECT)  # the statement names its folder: a fixed name keeps it the same
        for name, source in files.items():
            os.makedirs(os.path.join(stage, os.path.dirname(name)), exist_ok=True)
            os.symlink(os.path.abspath(source), os.path.join(stage, name))
        hashing = model_signing.hashing.Config().set_allow_symlinks(True)
        signing = model_signing.signing.Config().use_elliptic_key_signer(private_key=key.path)
        signing.set_hashing_config(hashing).sign(stage, output)
    signature = ModelSignature(output, signed_digests(Path(output).read_bytes(), key.public_pem))
    _check_pins(signature.digests, pinned)
    return signature


def _check_pins(signed: dict[str, str], pinned: dict[str, str]) -> None:
    for path, digest in pinned.items():
        name = path.lstrip("/")
        if name in signed and signed[name] != digest:
            raise UserInputError(f"{path} changed after it was pinned (sha256 differs); run package again")
