"""--sign-key: an unencrypted PEM EC key, refused in one line otherwise, at plan time (before any heavy work)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from packager.cli.main import main
from packager.errors import UserInputError
from packager.signing.keys import load_signing_key
from tests.signing_keys import write_key


@pytest.mark.parametrize("curve", ["SECP256R1", "SECP384R1"])
def test_an_ec_key_loads_and_gives_its_public_half(tmp_path, curve) -> None:
    key = load_signing_key(str(write_key(tmp_path / "k.pem", curve)))
    assert key.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----") and b"PRIVATE" not in key.public_pem
    assert "public_pem" not in repr(key)


def _rsa(path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip


def _encrypted(path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))  # fmt: skip


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_rsa, "is not an EC key"),
        (_encrypted, "is encrypted"),
        (lambda p: p.write_text("not a key"), "is not a PEM private key"),
        (lambda p: None, "cannot be read"),
    ],
)
def test_a_wrong_key_is_refused_in_one_line(tmp_path, make, words) -> None:
    path = tmp_path / "k.pem"
    make(path)
    with pytest.raises(UserInputError, match=words):
        load_signing_key(str(path))


def test_the_cli_refuses_a_bad_key_or_no_push_before_any_work(tmp_path, capsys, demo_adapter) -> None:
    (tmp_path / "bad.pem").write_text("nope")
    work = tmp_path / "work"
    tag = "127.0.0.1:5000/acme/demo:1"
    for extra, words in (
        (["--push", "--sign-key", str(tmp_path / "bad.pem")], "is not a PEM private key"),
        (["--sign-key", str(write_key(tmp_path / "k.pem"))], "add --push"),
    ):
        flags = ["--adapter", demo_adapter, "--layout", "baked", "--tag", tag, "--work", str(work), "--dry-run"]
        code = main(["package", *flags, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not work.exists()
