"""`packager verify-image`: check a pushed image against what `package --sign-key` attached to it."""

from __future__ import annotations

import argparse

from packager.cli.common import password_from_stdin, stderr_line
from packager.errors import UserInputError
from packager.image.reference import split_reference


def add_verify_image_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `verify-image` subcommand."""
    p = sub.add_parser(
        "verify-image",
        parents=[common],
        help="check a signed image in its registry: signatures, lock, BOM and every layer",
        description=(
            "Fetch the referrers `package --sign-key` attached to the image (through the OCI referrers API, or the "
            "tag-schema fallback) and check, stopping at the first mismatch: the image signature (cosign's format) "
            "names this manifest; the model signature (OpenSSF model-signing) verifies with the key; the attached "
            "lock and BOM are the signed ones and agree; every layer, streamed once, holds the signed files. "
            "Exits 1 with one line naming the mismatch. (`packager verify` checks a merge against PEFT instead.)"
        ),
        epilog=(
            "examples:\n  packager verify-image 127.0.0.1:5000/acme/chat:1 --key packager-build/signature/key.pub\n"
            "  packager verify-image 127.0.0.1:5000/acme/chat@sha256:... --key key.pub"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", metavar="REF", help="the image: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...")
    p.add_argument("--key", required=True, metavar="PUB", help="the signer's PEM public key (WORK/signature/key.pub)")
    p.add_argument("--username", help="registry user")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    p.set_defaults(func=_cmd_verify_image)


def _cmd_verify_image(args: argparse.Namespace) -> int:
    from packager.signing.attach import Registry
    from packager.signing.verify import verify_image

    try:
        with open(args.key, "rb") as f:
            public_pem = f.read()
    except OSError as exc:
        raise UserInputError(f"--key {args.key} cannot be read ({exc.strerror}); pass the signer's key.pub") from None
    repository = split_reference(args.reference)[0]
    registry = Registry(repository, args.username, password_from_stdin(args))
    verified = verify_image(args.reference, _checked_key(public_pem, args.key), registry, stderr_line)
    print(
        f"verified {args.reference}@{verified.digest}: image and model signatures, lock, BOM, "
        f"{verified.files} signed files in {verified.layers} layers (referrers via the {verified.via})"
    )
    return 0


def _checked_key(public_pem: bytes, path: str) -> bytes:
    from packager.runtime.signature import SignatureMismatch, load_public_key

    try:
        load_public_key(public_pem, f"--key {path}")
    except SignatureMismatch as exc:
        raise UserInputError(str(exc)) from None
    return public_pem
