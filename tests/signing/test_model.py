"""The model signature (packager/signing/model.py) against OpenSSF model-signing's own verifier, and packager's
runtime check (packager/runtime/signature.py) against the same library: both accept and both refuse alike."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from packager.errors import UserInputError
from packager.image.context import ModelFiles, write_context
from packager.plan import FileEntry
from packager.runtime.signature import SignatureMismatch, check_files, signed_digests
from packager.signing.keys import load_signing_key
from packager.signing.model import sign_model, signed_files
from tests import plans
from tests.signing_keys import write_key


@pytest.fixture()
def context(tmp_path: Path) -> Path:
    folder = tmp_path / "merged"
    folder.mkdir()
    files = []
    for name, data in (("model.safetensors", b"w" * 5000), ("config.json", b"{}")):
        (folder / name).write_bytes(data)
        files.append(FileEntry(name, len(data), hashlib.sha256(data).hexdigest()))
    model = ModelFiles(str(folder), tuple(files))
    return Path(write_context(plans.baked(), str(tmp_path / "ctx"), model, model.files).path)


@pytest.fixture()
def key(tmp_path: Path):
    return load_signing_key(str(write_key(tmp_path / "keys" / "sign.pem")))


def _image_folder(context: Path, target: Path) -> Path:
    """The signed files copied out as the image lays them out (what `docker cp` would give)."""
    for name, source in signed_files(str(context)).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / name)
    return target


def _sign(context: Path, key, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    return sign_model(str(context), key, str(out / "model.sig"), {})


def test_it_signs_the_model_runtime_json_lock_and_bom_by_image_path(context, key, tmp_path) -> None:
    signature = _sign(context, key, tmp_path / "sig")
    assert set(signature.digests) == {
        "models/merged/model.safetensors", "models/merged/config.json", "opt/packager/runtime.json",
        "opt/packager/packager.lock.json", "opt/packager/bom.cdx.json",
    }  # fmt: skip
    lock = (context / "packager.lock.json").read_bytes()
    assert signature.digests["opt/packager/packager.lock.json"] == hashlib.sha256(lock).hexdigest()
    assert not any(name.startswith("opt/packager/packager_runtime") for name in signature.digests)


def test_openssf_model_signing_verifies_it_and_refuses_a_changed_file(context, key, tmp_path) -> None:
    import model_signing

    signature = _sign(context, key, tmp_path / "sig")
    folder = _image_folder(context, tmp_path / "image")
    public = tmp_path / "key.pub"
    public.write_bytes(key.public_pem)
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=str(public))
    verifier.verify(str(folder), signature.path)
    check_files(str(folder), signed_digests(signature.bundle(), key.public_pem), ("/models/merged",))
    weight = folder / "models/merged/model.safetensors"
    weight.write_bytes(weight.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError):
        verifier.verify(str(folder), signature.path)
    with pytest.raises(SignatureMismatch, match=r"/models/merged/model\.safetensors differs from the signed file"):
        check_files(str(folder), signed_digests(signature.bundle(), key.public_pem), ("/models/merged",))


def test_an_unsigned_file_beside_the_model_is_refused_by_both(context, key, tmp_path) -> None:
    import model_signing

    signature = _sign(context, key, tmp_path / "sig")
    folder = _image_folder(context, tmp_path / "image")
    (folder / "models/merged/extra.safetensors").write_bytes(b"added")
    public = tmp_path / "key.pub"
    public.write_bytes(key.public_pem)
    with pytest.raises(ValueError):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=str(public)).verify(
            str(folder), signature.path
        )
    with pytest.raises(SignatureMismatch, match=r"extra\.safetensors is not signed"):
        check_files(str(folder), signed_digests(signature.bundle(), key.public_pem), ("/models/merged",))


def test_another_key_or_a_changed_statement_does_not_verify(context, key, tmp_path) -> None:
    signature = _sign(context, key, tmp_path / "sig")
    other = load_signing_key(str(write_key(tmp_path / "other.pem")))
    with pytest.raises(SignatureMismatch, match="does not verify"):
        signed_digests(signature.bundle(), other.public_pem)
    bundle = json.loads(signature.bundle())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(SignatureMismatch, match="does not verify"):
        signed_digests(json.dumps(bundle).encode(), key.public_pem)
    with pytest.raises(SignatureMismatch, match="not a model-signing bundle"):
        signed_digests(b"{}", key.public_pem)


def test_the_signed_statement_is_the_same_each_time(context, key, tmp_path) -> None:
    """ECDSA signatures differ at each signing; the statement they sign does not (no time, a fixed subject)."""
    first, second = (json.loads(_sign(context, key, tmp_path / n).bundle())["dsseEnvelope"] for n in ("a", "b"))
    assert first["payload"] == second["payload"] and first["signatures"] != second["signatures"]


def test_a_file_changed_since_it_was_pinned_is_refused(context, key, tmp_path) -> None:
    pinned = {"/models/merged/model.safetensors": "0" * 64}
    (tmp_path / "sig").mkdir()
    with pytest.raises(UserInputError, match="changed after it was pinned"):
        sign_model(str(context), key, str(tmp_path / "sig" / "model.sig"), pinned)
