"""What several commands share."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from packager.errors import UserInputError

if TYPE_CHECKING:
    from packager.deployment import DeploySpec


def add_qlora_flags(p: argparse.ArgumentParser) -> None:
    """--qlora and --qlora-merge, for every command that merges."""
    p.add_argument(
        "--qlora",
        action="store_true",
        help="the adapter was trained with QLoRA on a 4-bit base (detected from the base's name or config otherwise)",
    )
    p.add_argument(
        "--qlora-merge",
        choices=["w16", "simulate-nf4"],
        help="QLoRA adapters: merge onto the 16-bit weights (w16, the default) or onto the weights rounded through "
        "bitsandbytes nf4 as training saw them (simulate-nf4)",
    )


def add_task_flag(p: argparse.ArgumentParser) -> None:
    """--task, for every command that builds the model."""
    from packager.tasks import TASKS

    p.add_argument(
        "--task",
        type=str.upper,
        choices=list(TASKS),
        help="the model class to build (default: the adapter's task_type, else the base's architecture): "
        + "; ".join(f"{name} = {auto} ({what})" for name, (auto, what) in TASKS.items()),
    )


def hash_base_ahead(adapter: str, base: str | None, checkpoint: int | None = None) -> None:
    """Hash a local base's weight files on the second core while torch is imported (one core sits idle for
    about a second then); the merge that follows reads them without hashing again."""
    from packager.formats.folders import local_base_weight_paths
    from packager.io.hashing import hash_ahead

    hash_ahead(local_base_weight_paths(adapter, base, checkpoint))


def parse_size(text: str) -> int:
    """A size flag: `500MB`, `5GB`, `2GiB` or plain bytes."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(upper[: -len(unit)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500MB or 5GB")


def add_deploy_flags(p: argparse.ArgumentParser) -> None:
    """--target, --base-volume, --replicas and --base-model-image: the manifests beside the image."""
    from packager.deploy.targets import TARGETS, help_text
    from packager.deployment import BASE_VOLUMES

    p.add_argument("--target", action="append", choices=tuple(TARGETS), help=help_text())
    p.add_argument(
        "--base-volume",
        default="auto",
        choices=BASE_VOLUMES,
        help="shared layout: how pods get the base. image: the pushed base-model image (ImageVolume, KServe "
        "oci://, a compose volume filled from it); pvc: a claim filled by a loader Job; bind: a host folder "
        "(compose); volume: a named volume you fill (compose); auto (default): image when one was pushed",
    )
    p.add_argument(
        "--replicas",
        type=replica_range,
        default=(1, 0),
        metavar="N|MIN:MAX",
        help="pods (Kubernetes, KServe); default 1. MIN:MAX autoscales on requests waiting per pod (an "
        "autoscaling/v2 HorizontalPodAutoscaler; KServe: its own autoscaler through KEDA)",
    )
    p.add_argument(
        "--api-key-secret",
        metavar="NAME",
        default="",
        help="require an API key: the Kubernetes Secret NAME (its `api-key`) gives PACKAGER_API_KEY to every pod; "
        "compose reads NAME.env; requests then need `Authorization: Bearer <key>` (/health, /metrics stay open)",
    )
    p.add_argument(
        "--network-policy",
        action="store_true",
        help="also a NetworkPolicy: only pods labelled packager.io/client=true, and Prometheus's namespace "
        "(--metrics-namespace), reach the serving port",
    )
    p.add_argument(
        "--metrics-namespace", default="monitoring", metavar="NAME",
        help="the namespace Prometheus scrapes from, admitted by --network-policy (default monitoring: the "
        "Prometheus Operator's, where the autoscaler's query goes)",
    )  # fmt: skip
    p.add_argument(
        "--gpu-toleration", default="nvidia.com/gpu", metavar="KEY",
        help="the taint GPU pods tolerate (default nvidia.com/gpu, the NVIDIA GPU Operator's; \"\": none)",
    )  # fmt: skip
    p.add_argument(
        "--base-model-image",
        metavar="REPO@sha256:...",
        help="shared layout: the base-model image to mount (default: the one `packager package-base --push` "
        "recorded for this base's files)",
    )


def fields_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """`cls` (a dataclass) built field by field from the flags of the same name; a flag this subcommand lacks
    leaves the field's default; `given`: the fields whose value is not one flag's."""
    names = {f.name for f in dataclasses.fields(cls)} - set(given)
    return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)}, **given)


def deploy_spec(args: argparse.Namespace) -> DeploySpec:
    """What the deploy flags ask of the manifests (every target when none is named)."""
    from packager.deploy.targets import TARGETS
    from packager.deployment import DeploySpec

    targets = tuple(dict.fromkeys(args.target or TARGETS))
    low, high = args.replicas
    spec = DeploySpec(targets, args.base_volume, low, high, args.api_key_secret, args.network_policy)
    return dataclasses.replace(spec, chosen=bool(args.target), metrics_namespace=args.metrics_namespace,
                               gpu_toleration=args.gpu_toleration)  # fmt: skip


def replica_range(text: str) -> tuple[int, int]:
    """`N` (fixed) or `MIN:MAX` (autoscaled) as (replicas, max_replicas); max 0 means fixed."""
    low, sep, high = text.partition(":")
    try:
        return (int(low), int(high)) if sep else (int(low), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or MIN:MAX (e.g. 2 or 1:8)") from None


def password_from_stdin(args: argparse.Namespace) -> str | None:
    """The registry password from stdin with --password-stdin, else None (the docker login is used)."""
    if not getattr(args, "password_stdin", False):
        return None
    if args.username is None:
        raise UserInputError("--password-stdin needs --username")
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UserInputError("--password-stdin read an empty password; pipe it in: echo $PASS | packager ...")
    return password


def stderr_line(line: str) -> None:
    """Progress goes to stderr, so stdout stays the report."""
    print(line, file=sys.stderr)


def resolve_request(args: argparse.Namespace, hash_base: bool = True):
    """The resolve request of a command's --adapter/--base/... flags."""
    from packager.resolve.resolver import ResolveRequest

    return ResolveRequest(
        args.adapter,
        args.base,
        args.revision,
        args.checkpoint,
        args.dtype,
        args.allow_pickle,
        hash_base,
        args.engine,
        qlora_merge=args.qlora_merge,
        qlora=args.qlora,
        task=args.task,
    )
