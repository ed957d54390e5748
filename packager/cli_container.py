"""Container commands: package (the whole job), build and push (the single steps)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from packager.cli_artefact import add_artefact_flags, spec_from_args
from packager.errors import UserInputError


def add_container_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("package", parents=[common], help="resolve, merge, render, build and push an image")
    p.add_argument(
        "--adapter",
        action="append",
        required=True,
        metavar="PATH|NAME=PATH",
        help="adapter folder (repeat for several adapters in the shared layout)",
    )
    p.add_argument(
        "--layout",
        required=True,
        choices=["baked", "shared"],
        help="baked: merged weights in the image; shared: adapters only, base mounted read-only at /base",
    )
    p.add_argument("--base", metavar="PATH|HUB_ID", help="base model (default: from the adapter config)")
    p.add_argument("--revision", help="hub revision of the base")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="merged dtype (baked)")
    p.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt weights (weights_only=True)")
    p.add_argument(
        "--base-image",
        default=os.environ.get("PACKAGER_BASE_IMAGE"),
        metavar="IMAGE",
        help="runtime base image with python3, torch, transformers, peft, fastapi, uvicorn "
        "(`make base-image` builds one; env PACKAGER_BASE_IMAGE)",
    )
    p.add_argument("--tag", metavar="[REGISTRY/]REPO:TAG", help="image tag (default: packager/<adapter>:latest)")
    p.add_argument("--push", action="store_true", help="push the image to the registry named in --tag")
    p.add_argument("--username", help="registry user (default: your docker login)")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    p.add_argument(
        "--builder",
        default="auto",
        choices=["auto", "docker", "buildah", "oci"],
        help="auto (default): oci with --push, else docker. docker: the Engine API (local image, gzip "
        "push); oci: layers streamed uncompressed from the context to the registry (fastest push, "
        "no local image); buildah: daemonless",
    )
    p.add_argument("--work", default="packager-build", metavar="DIR", help="work folder (merged model, context)")
    p.add_argument("--no-verify", action="store_true", help="skip the logits parity check of the merge")
    add_artefact_flags(p)
    p.add_argument("--qlora", action="store_true", help="the adapter was trained on a 4-bit (QLoRA) base")
    p.add_argument(
        "--qlora-merge",
        choices=["w16", "simulate-nf4"],
        help="QLoRA adapters: merge onto the 16-bit weights (w16, default) or onto nf4-rounded weights as "
        "training saw them (simulate-nf4)",
    )
    p.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("push", parents=[common], help="push a built image to a registry")
    p.add_argument("--image", required=True, help="local image tag or id")
    p.add_argument("--registry", required=True, metavar="HOST[:PORT]/REPO", help="target repository")
    p.add_argument("--tag", default="latest", help="target tag (default: latest)")
    p.add_argument("--username", help="registry user (default: your docker login)")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    p.add_argument("--builder", default="docker", choices=["docker", "buildah"], help="engine to push with")
    p.set_defaults(func=cmd_push)


def _password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    if args.username is None:
        raise UserInputError("--password-stdin needs --username")
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UserInputError("--password-stdin read an empty password; pipe it in: echo $PASS | packager ...")
    return password


def cmd_package(args: argparse.Namespace) -> int:
    from packager.cli import hash_base_ahead
    from packager.folders import parse_adapter_arg

    if not args.base_image:
        raise UserInputError("no --base-image; build one with `make base-image` or set PACKAGER_BASE_IMAGE")
    adapters = tuple(parse_adapter_arg(a) for a in args.adapter)
    hash_base_ahead(adapters[0][1], args.base)

    from packager.package import PackageRequest, package
    from packager.report import print_package

    tag = args.tag or f"packager/{adapters[0][0].lower()}:latest"
    quiet = getattr(args, "quiet", False)
    request = PackageRequest(
        adapters,
        args.layout,
        args.base_image,
        tag,
        args.base,
        args.revision,
        args.dtype,
        args.allow_pickle,
        args.work,
        args.builder,
        args.push,
        args.username,
        _password(args),
        not args.no_verify,
        quiet,
        spec_from_args(args, args.layout),
        args.qlora,
        args.qlora_merge,
    )
    report = package(request, log=lambda line: print(line, file=sys.stderr))
    data = report.to_dict()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    print(json.dumps(data, indent=2)) if args.json else print_package(report)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from packager.build import PushRequest, get_builder
    from packager.template_filters import image_ref

    target = image_ref(f"{args.registry}:{args.tag}")
    builder = get_builder(args.builder)
    result = builder.push(
        PushRequest(args.image, target, args.username, _password(args)), log=lambda line: print(line, file=sys.stderr)
    )
    uploaded = result.pushed_bytes / 1e6
    print(f"pushed {result.target}@{result.digest} ({result.seconds:.1f}s, {uploaded:.1f} MB uploaded)")
    return 0
