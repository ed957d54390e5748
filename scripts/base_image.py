"""Build (or reuse) the runnable runtime base image `packager-runtime:<hash>` or `packager-vllm:<hash>` without
pulling anything, for `make base-image` and the tests: the recipe is packager's own (packager/image/
runtime_build.py, also `packager base-image`). Progress goes to stderr; the image tag is the last stdout line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import docker

from packager.image.runtime_build import ensure_base_image as _ensure_base_image
from packager.image.runtime_images import (  # noqa: F401 - the recipe, re-exported for the scripts and tests
    FALLBACK_PINS,
    PYTHON_PACKAGES,
    REPOSITORY,
    SUITE,
    TORCH_VERSION,
    VLLM_PINS,
    VLLM_REPOSITORY,
    image_tag,
    includes,
    pinned_requirements,
    recipe_hash,
)


def log(msg: str) -> None:
    """Progress output to stderr."""
    print(f"[base_image] {msg}", file=sys.stderr, flush=True)


def ensure_base_image(docker_host: str, runtime: str = "packager") -> str:
    """The runtime image's tag in the engine at `docker_host`, built first where it lacks it."""
    return _ensure_base_image(docker.DockerClient(base_url=docker_host, timeout=900), runtime, log)


def main(argv: list[str] | None = None) -> int:
    """CLI: build or reuse the runtime base image, print its tag as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"), help="default: $DOCKER_HOST")
    parser.add_argument("--print-tag", action="store_true", help="print the tag its inputs give; build nothing")
    parser.add_argument("--runtime", default="packager", choices=["packager", "vllm"], help="which runtime image")
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag(args.runtime))
        return 0
    if not args.docker_host:
        parser.error("no engine: pass --docker-host or set DOCKER_HOST (see scripts/local_engine.py up)")
    started = time.monotonic()
    tag = ensure_base_image(args.docker_host, args.runtime)
    log(f"done in {time.monotonic() - started:.1f} s")
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
