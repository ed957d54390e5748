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
