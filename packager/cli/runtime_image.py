"""`packager base-image`: the runtime image a CPU plan starts FROM (packager's server, or vLLM), built here from
its recipe with nothing pulled, or found in the engine; the first `package` that needs one builds it the same
way. Progress on stderr, the tag on stdout."""

from __future__ import annotations

import argparse
import textwrap

from packager.errors import UserInputError

DESCRIPTION = textwrap.fill(
    "The runtime image packager's CPU images start FROM, named by its recipe (packager-runtime:<hash> or "
    "packager-vllm:<hash>): a minimal Debian (debootstrap) with the pinned Python stack installed by this "
    "environment's pip, imported into the Docker engine and checked in a container. Nothing is pulled; a second run "
    "finds it. `packager package` builds it by itself when its plan needs it and no --base-image is given.",
    100,
)


def add_runtime_image_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The base-image subcommand."""
    p = sub.add_parser("base-image", parents=[common], help="build (or find) the runtime image CPU images start FROM",
                       description=DESCRIPTION)  # fmt: skip
    p.add_argument("--runtime", default="packager", choices=("packager", "vllm"),
                   help="packager's own server or vLLM (default packager; `package --dry-run` says which a plan "
                   "needs)")  # fmt: skip
    p.add_argument("--print-tag", action="store_true", help="print the tag the recipe gives; build nothing")
    p.set_defaults(func=cmd_base_image)


def cmd_base_image(args: argparse.Namespace) -> int:
    """Print the runtime image's tag, built first where the engine lacks it."""
    from packager.image.runtime_images import image_tag

    print(image_tag(args.runtime) if args.print_tag else ensure_runtime_image(args.runtime, args.quiet))
    return 0


def ensure_runtime_image(runtime: str, quiet: bool = False) -> str:
    """The runtime image in the engine (DOCKER_HOST, else the default socket), built there when missing."""
    import docker

    from packager.cli.common import stderr_line
    from packager.image.runtime_build import ensure_base_image

    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except docker.errors.DockerException:
        raise UserInputError(
            "the runtime image is built in a Docker engine and none answers (DOCKER_HOST, else the default socket); "
            "start one, or pass --base-image IMAGE"
        ) from None
    return ensure_base_image(client, runtime, (lambda _line: None) if quiet else lambda line: stderr_line(
        f"base-image: {line}"))  # fmt: skip
