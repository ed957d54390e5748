"""Container commands: package (the whole job), render (stop at the build context), build and push."""

from __future__ import annotations

import argparse
import json
import os
import textwrap

from packager.builders import AUTO_LOCAL, AUTO_PUSH, BUILDERS
from packager.builders import help_text as builder_help
from packager.cli.artefact import artefact_from_args
from packager.cli.common import password_from_stdin, stderr_line
from packager.cli.job_flags import EXAMPLES, add_job_flags
from packager.cli.sizing import target_from_args
from packager.errors import UserInputError


def add_container_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """package, render, build and push."""
    p = sub.add_parser(
        "package", parents=[common], help="resolve, merge, render, build and push an image",
        description=textwrap.fill(
            "Every step: resolve and pin the base, merge (baked), quantize or export if asked, render the build "
            "context and the manifests, build the image and push it. The plan is checked before any heavy work; "
            "--dry-run prints it.", 100,
        ), epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_job_flags(p, "package")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser(
        "render",
        parents=[common],
        help="resolve, merge and write the build context (Dockerfile, lock, runtime, model files), then stop",
        description="Everything `package` does before the build: the context in WORK/context builds unchanged "
        "with docker build, docker buildx, buildah bud or kaniko, or with `packager build`.",
    )
    add_job_flags(p, "render")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("build", parents=[common], help="build a rendered context (packager render) into an image")
    p.add_argument("context", metavar="CONTEXT", help="a folder written by `packager render`")
    p.add_argument("--tag", help="image tag (default: the one in the context's lock)")
    p.add_argument("--builder", default=AUTO_LOCAL, choices=tuple(BUILDERS), help=builder_help(auto=False))
    p.add_argument("--json", action="store_true", help="print the build result as JSON")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("push", parents=[common], help="push a built image, or a rendered context, to a registry")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="local image tag or id (docker or buildah)")
    source.add_argument("--context", metavar="DIR", help="a rendered context, pushed by the oci builder")
    p.add_argument("--registry", required=True, metavar="HOST[:PORT]/REPO", help="target repository")
    p.add_argument("--tag", default="latest", help="target tag (default: latest)")
    _add_credential_flags(p)
    p.add_argument("--builder", choices=tuple(BUILDERS), help=f"default: {AUTO_PUSH} with --context, else {AUTO_LOCAL}")
    p.set_defaults(func=cmd_push)


def _add_credential_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", help="registry user (default: your docker login)")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")


def _package_request(args: argparse.Namespace):
    """The PackageRequest the flags describe; hashes a local base ahead while torch imports."""
    from packager.cli.common import hash_base_ahead
    from packager.formats.folders import parse_adapter_arg

    adapters = tuple(parse_adapter_arg(a) for a in args.adapter)
    if not getattr(args, "dry_run", False):
        hash_base_ahead(adapters[0][1], args.base)

    from packager.cli.common import deploy_spec, fields_from_args
    from packager.planning.request import ImageRequest, Inputs, PackageRequest, Serving

    tag = args.tag or f"packager/{adapters[0][0].lower()}:latest"
    return PackageRequest(
        inputs=fields_from_args(Inputs, args, adapters=adapters),
        serving=fields_from_args(Serving, args, target=target_from_args(args)),
        image=fields_from_args(ImageRequest, args, tag=tag, password=password_from_stdin(args)),
        artefact=artefact_from_args(args),
        deploy=deploy_spec(args),
        work=args.work,
        verify=not args.no_verify,
        quiet=getattr(args, "quiet", False),
    )


def cmd_package(args: argparse.Namespace) -> int:
    """`packager package`: every step, or the plan alone with --dry-run."""
    request = _package_request(args)
    if args.dry_run:
        return _print_plan(request, args.json)
    if not request.image.base_image and request.serving.device == "cpu":  # the runtime image it names: found or built
        import dataclasses

        from packager.cli.runtime_image import ensure_runtime_image
        from packager.planning.job import plan_package

        image = plan_package(request).plan.image
        base_image = ensure_runtime_image(image.engine, request.quiet)
        request = dataclasses.replace(request, image=dataclasses.replace(request.image, base_image=base_image))

    from packager.cli.report import print_package
    from packager.package import package

    report = package(request, log=stderr_line)
    data = report.to_dict()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    print(json.dumps(data, indent=2)) if args.json else print_package(report)
    return 0


def _print_plan(request, as_json: bool) -> int:
    from packager.cli.report import print_job
    from packager.planning.job import plan_package

    plan = plan_package(request).plan
    print(json.dumps(plan.to_dict(), indent=2, default=str)) if as_json else print_job(plan)
    _note_default_base(request, plan.image, "package")
    return 0


def _note_default_base(request, image, command: str) -> None:
    """Where the plan picked the FROM itself, say how to get that image."""
    if request.image.base_image:
        return
    how = image.base_image_how
    stderr_line(f"{command}: FROM {image.base_image}, the runtime image this plan needs ({how})")


def cmd_render(args: argparse.Namespace) -> int:
    """`packager render`: every step up to the written build context."""
    request = _package_request(args)

    from packager.cli.report import print_rendered
    from packager.package import render_job
    from packager.planning.job import plan_package

    rendered = render_job(plan_package(request), request, log=stderr_line)
    _note_default_base(request, rendered.plan.image, "render")
    if args.json:
        print(
            json.dumps(
                {
                    "context": rendered.context.path,
                    "lock": rendered.context.lock_path,
                    "files": [f.__dict__ for f in rendered.context.files],
                    "notes": list(rendered.notes),
                    "manifests": rendered.manifests,
                    "timings": rendered.timings,
                },
                indent=2,
            )
        )
    else:
        print_rendered(rendered)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """`packager build CONTEXT`: build a rendered context with the chosen builder."""
    from packager.builders import get_builder
    from packager.image.filters import image_ref
    from packager.package import build_context

    tag = image_ref(args.tag or _context_tag(args.context))
    built = build_context(get_builder(args.builder), args.context, tag, stderr_line)
    if args.json:
        print(json.dumps(built.__dict__, default=lambda o: o.__dict__, indent=2))
    else:
        print(f"built {built.tag} with {built.builder} ({built.size / 1e6:.1f} MB, {built.seconds:.1f}s)")
        print(f"  image id: {built.image_id}")
        if not BUILDERS[built.builder].local_image:
            print(f"  push it: packager push --context {args.context} --registry REGISTRY/REPO --tag TAG")
    return 0


def _context_tag(context: str) -> str:
    from packager.model_files import LOCK_FILE

    path = os.path.join(context, LOCK_FILE)
    if not os.path.isfile(os.path.join(context, "Dockerfile")) or not os.path.isfile(path):
        raise UserInputError(
            f"{context} is not a rendered context (no Dockerfile or {LOCK_FILE}); run `packager render`"
        )
    with open(path) as f:
        tag = (json.load(f).get("image") or {}).get("tag")
    if not tag:
        raise UserInputError(f"{path} names no image tag; pass --tag")
    return tag


def cmd_push(args: argparse.Namespace) -> int:
    """`packager push`: a local image (docker, buildah) or a rendered context (oci) to a registry."""
    from packager.builders import get_builder
    from packager.builders.base import BuildRequest, PushRequest
    from packager.image.filters import image_ref

    target = image_ref(f"{args.registry}:{args.tag}")
    builder = get_builder(args.builder or (AUTO_PUSH if args.context else AUTO_LOCAL))
    image = args.image
    if args.context:  # the oci builder assembles the image from the context, then streams it
        image = builder.build(BuildRequest(args.context, target), log=stderr_line).tag
    result = builder.push(PushRequest(image, target, args.username, password_from_stdin(args)), log=stderr_line)
    uploaded = result.pushed_bytes / 1e6
    print(f"pushed {result.target}@{result.digest} ({result.seconds:.1f}s, {uploaded:.1f} MB uploaded)")
    return 0
