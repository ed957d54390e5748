"""`packager sbom`: print the machine-learning BOM of a build context or of a local image (bom.py wrote it)."""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile

from packager.bom import BOM_FILE
from packager.errors import RegistryError, UserInputError
from packager.image.paths import RUNTIME_ROOT
from packager.image.reference import names_registry, split_reference

IMAGE_PATH = f"{RUNTIME_ROOT}/{BOM_FILE}"


def add_sbom_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The `sbom` subcommand."""
    p = sub.add_parser(
        "sbom",
        parents=[common],
        help="print the CycloneDX 1.6 ML-BOM of a build context or a local image",
        description=(
            "Print the image's machine-learning bill of materials (CycloneDX 1.6 JSON): the served model, the base "
            f"and adapters with every file's sha256, the runtime's packages and base image. It is in the build "
            f"context ({BOM_FILE}) and in the image ({IMAGE_PATH}); an image that is not local but was pushed with "
            "--sign-key is read from the registry, where the BOM is attached to it."
        ),
        epilog="examples:\n  packager sbom ./context\n  packager sbom 127.0.0.1:5000/acme/demo:1.0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="CONTEXT|IMAGE", help="a build context folder, a BOM file, or an image")
    p.set_defaults(func=_cmd_sbom)


def _cmd_sbom(args: argparse.Namespace) -> int:
    sys.stdout.write(read_bom(args.target))
    return 0


def read_bom(target: str) -> str:
    """The BOM text of a context folder, a BOM file, a local image (through the Docker engine), or a pushed image's
    attached BOM (signed images)."""
    if os.path.isdir(target):
        path = os.path.join(target, BOM_FILE)
        if not os.path.isfile(path):
            raise UserInputError(f"{target} holds no {BOM_FILE}; pass a build context packager rendered")
        target = path
    if os.path.isfile(target):
        with open(target, encoding="utf-8") as f:
            return f.read()
    return _from_image(target)


def _from_registry(reference: str) -> str:
    """The BOM `package --sign-key` attached to a pushed image (no pull)."""
    from packager.signing.attach import BOM_TYPE, Registry
    from packager.signing.verify import attached_file, image_referrers

    client = Registry(split_reference(reference)[0]).client()
    try:
        _, _, attached, _ = image_referrers(client, reference)
    except RegistryError as exc:
        raise UserInputError(f"no local image {reference}, and {exc}; pull it, or pass its build context") from None
    if BOM_TYPE not in attached:
        raise UserInputError(f"{reference} is not local and has no BOM attached; pull it, or pass its build context")
    return attached_file(client, attached, BOM_TYPE, reference).decode()


def _from_image(reference: str) -> str:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound

    try:
        client = docker.from_env()
        container = client.containers.create(reference)
    except ImageNotFound:
        if names_registry(reference):
            return _from_registry(reference)
        raise UserInputError(f"no local image {reference}; pull it first, or pass its build context") from None
    except DockerException as exc:
        raise UserInputError(f"cannot reach the Docker engine ({exc}); set DOCKER_HOST or pass a context") from None
    try:
        chunks, _ = container.get_archive(IMAGE_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(BOM_FILE)
            return member.read().decode() if member else ""
    except NotFound:
        raise UserInputError(f"{reference} holds no {IMAGE_PATH}; it was not built by packager 0.2 or later") from None
    finally:
        container.remove(force=True)
