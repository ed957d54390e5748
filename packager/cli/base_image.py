"""`packager package-base`: the base model as an OCI image, for the shared layout at scale."""

from __future__ import annotations

import argparse
import json

from packager.builders import BUILDERS, help_text
from packager.cli.artefact import add_gate_flags, gate_from_args
from packager.cli.common import parse_size, password_from_stdin, stderr_line
from packager.quantize.schemes import names

DESCRIPTION = """\
Put a base model into an OCI image: its files under /models, one uncompressed layer per weight file (a registry
that has a layer never receives it again), deterministic tars, labels naming the base and the sha256 of every
file, FROM a minimal busybox image built here (sh, ln, sleep: what KServe's modelcar sidecar runs). With --push
the digest is recorded, so a later `packager package --layout shared` of an adapter on this base pins the image
in its lock, labels and manifests (Kubernetes ImageVolume, KServe oci://, compose volume). A safetensors file
above --max-layer-size is split at tensor boundaries into files that each fit (the index rewritten).

example:
  packager package-base --base ./llama-base --tag 127.0.0.1:5000/llama-base:v1 --push
"""


def add_base_image_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The package-base subcommand."""
    p = sub.add_parser(
        "package-base",
        parents=[common],
        help="the base model as an OCI image (files under /models, a layer per weight file), pushed",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", required=True, metavar="PATH|HUB_ID", help="base model folder or cached hub id")
    p.add_argument("--revision", help="hub revision of the base (default: main)")
    p.add_argument("--tag", metavar="[REGISTRY/]REPO:TAG", help="default: packager/<base>-base:<content hash>")
    p.add_argument("--push", action="store_true", help="push to the registry named in --tag and record the digest")
    p.add_argument("--username", help="registry user (default: your docker login)")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    p.add_argument("--builder", default="auto", choices=("auto", *BUILDERS), help=help_text())
    p.add_argument(
        "--from", dest="from_image", metavar="IMAGE", help="FROM image with sh, ln and sleep (default: built here)"
    )
    p.add_argument(
        "--max-layer-size",
        type=parse_size,
        default="10GB",
        metavar="SIZE",
        help="your registry's cap on one layer (default 10GB): a safetensors file above it is split at tensor "
        "boundaries into several files (the index rewritten), so each layer fits",
    )
    p.add_argument("--allow-pickle", action="store_true", help="accept a base with .bin weights only")
    p.add_argument(
        "--quantize",
        default="none",
        choices=["none", *names("streamed")],
        help="quantize the base first (compressed-tensors, streamed, measured against the 16-bit base): the image "
        "a shared `package --quantize SCHEME` serves LoRA adapters on with vLLM (default: none)",
    )
    add_gate_flags(p)
    p.add_argument("--work", default="packager-build", metavar="DIR",
                   help="work folder: WORK/base-context (default packager-build)")  # fmt: skip
    p.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    p.add_argument("--dry-run", action="store_true", help="resolve and pin the base, print the plan, build nothing")
    p.add_argument("--json", action="store_true", help="print the JSON report (or plan) instead of a summary")
    p.set_defaults(func=cmd_package_base)


def cmd_package_base(args: argparse.Namespace) -> int:
    """`packager package-base`: build (and push) the base-model image, or print its plan."""
    from packager.model_image.make import BaseImageRequest, package_base, plan_base_image

    request = BaseImageRequest(
        args.base,
        args.revision,
        args.tag,
        args.from_image,
        args.builder,
        args.push,
        args.username,
        password_from_stdin(args),
        args.max_layer_size,
        args.work,
        args.allow_pickle,
        args.quantize,
        gate_from_args(args),
    )
    if args.dry_run:
        plan = plan_base_image(request, runnable=args.from_image or "packager-modelbase:dry-run", dry_run=True)
        print(json.dumps(plan.to_dict(), indent=2, default=str) if args.json else _plan_text(plan))
        return 0
    report = package_base(request, log=(lambda _line: None) if getattr(args, "quiet", False) else stderr_line)
    data = report.to_dict()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    print(json.dumps(data, indent=2) if args.json else _report_text(report))
    return 0


def _plan_text(plan) -> str:
    lines = [f"plan (dry run): {plan.base.label_id} -> {plan.tag} with the {plan.builder} builder"]
    if plan.quantization:
        lines.append(f"  quantize: {plan.quantization} first (streamed into WORK/base-{plan.quantization})")
    lines += [f"  split:  {name} (above --max-layer-size; at tensor boundaries)" for name in plan.split]
    lines += [f"  layer {layer.name}: {len(layer.files)} files, {layer.size / 1e6:.1f} MB" for layer in plan.layers]
    return "\n".join(lines)


def _report_text(report) -> str:
    lines = [f"built {report.tag} ({report.size / 1e6:.1f} MB, {report.files} files, {len(report.layers)} layers)"]
    if report.quantized:
        lines.append(f"  quantized: {report.quantized['kind']}: {report.quantized['summary']}")
    if report.reference:
        sent = (report.pushed_bytes or 0) / 1e6
        lines.append(f"  pushed: {report.reference} ({sent:.1f} MB sent, {report.skipped_layers} layers already there)")
        lines.append("  next:   packager package --layout shared ... (the image is pinned in the lock and manifests)")
    return "\n".join(lines)
