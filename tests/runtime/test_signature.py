"""The runtime's start-up check against a mounted model signature (packager/runtime/signature.py); the bundle
itself is proven against OpenSSF model-signing in tests/signing/test_model.py."""

from __future__ import annotations

import pytest

from packager.runtime.signature import SignatureMismatch, check_mounted_signature


def test_nothing_mounted_checks_nothing(tmp_path) -> None:
    assert check_mounted_signature(("/models/merged",), str(tmp_path / "none"), str(tmp_path)) is False


def test_a_signature_without_its_key_is_refused(tmp_path) -> None:
    (tmp_path / "model.sig").write_text("{}")
    with pytest.raises(SignatureMismatch, match=r"without key\.pub"):
        check_mounted_signature(("/models/merged",), str(tmp_path), str(tmp_path))


def test_the_environment_names_another_folder(tmp_path, monkeypatch) -> None:
    (tmp_path / "model.sig").write_text("{}")
    (tmp_path / "key.pub").write_text("x")
    monkeypatch.setenv("PACKAGER_SIGNATURE_DIR", str(tmp_path))
    with pytest.raises(SignatureMismatch, match="not a model-signing bundle"):
        check_mounted_signature(("/models/merged",), root=str(tmp_path))


def _sign_in_place(folder, key_pem, out) -> None:
    """A model-signing bundle over `folder`'s files named by their absolute paths (as an image's are)."""
    import os

    import model_signing

    stage = out / "stage"
    for name in os.listdir(folder):
        target = stage / str(folder / name).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(folder / name, target)
    hashing = model_signing.hashing.Config().set_allow_symlinks(True)
    signing = model_signing.signing.Config().use_elliptic_key_signer(private_key=str(key_pem))
    signing.set_hashing_config(hashing).sign(str(stage), str(out / "model.sig"))


def test_the_vllm_launcher_refuses_an_altered_model_before_the_engine_starts(tmp_path, monkeypatch, capsys) -> None:
    import json

    from packager.runtime import vllm_launch
    from packager.runtime.config import RuntimeConfig, VllmSettings
    from packager.signing.keys import load_signing_key
    from tests.signing_keys import write_key

    model = tmp_path / "models" / "merged"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    key = load_signing_key(str(write_key(tmp_path / "sign.pem")))
    mounted = tmp_path / "signature"
    mounted.mkdir()
    _sign_in_place(model, key.path, mounted)
    (mounted / "key.pub").write_bytes(key.public_pem)
    monkeypatch.setenv("PACKAGER_SIGNATURE_DIR", str(mounted))
    execs = []
    monkeypatch.setattr(vllm_launch.os, "execvpe", lambda *a: execs.append(a))
    config = RuntimeConfig("baked", model_dir=str(model), served_name="demo", engine="vllm", vllm=VllmSettings())
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config.to_json()))
    (model / "model.safetensors").write_bytes(b"Weights")
    assert vllm_launch.main(["--config", str(path)]) == 3 and not execs
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model.safetensors differs from the signed file" in err[0]
    (model / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(vllm_launch, "check_shm", lambda: None)
    vllm_launch.main(["--config", str(path)])
    assert len(execs) == 1 and "verified against the mounted signature" in capsys.readouterr().err
