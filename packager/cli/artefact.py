"""Quantization and export flags (shared by `package` and `quantize`) and the `quantize` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from packager.accuracy.gate import DEFAULT_MAX_ACCURACY_LOSS, DEFAULT_MAX_KL, DEFAULT_MIN_TOP1, AccuracyGate
from packager.artefact.make import make_artefact
from packager.artefact.spec import EXPORT_CHOICES, GRANULARITIES, ArtefactSpec, check_artefact
from packager.cli.common import fields_from_args
from packager.errors import UserInputError
from packager.quantize.schemes import help_text, names


def add_artefact_flags(p: Any, how: str = "as the merge streams") -> None:
    """Add --quantize, --export, --max-accuracy-loss, --onnx-granularity and --onnx-atol to a command (`how`:
    when the weights are quantized)."""
    p.add_argument("--quantize", default="none", metavar="SCHEME", help=help_text(how))
    p.add_argument(
        "--calibrate",
        nargs="?",
        const="",
        metavar="FILE",
        help='quantize by GPTQ, layer by layer, on a calibration text (a .txt, or a .jsonl of {"text": ...}; '
        "alone: the text packager ships) instead of round-to-nearest; w4a16 gains the most",
    )
    p.add_argument(
        "--export", default="none", choices=EXPORT_CHOICES, help="onnx: serve with onnxruntime (default: none)"
    )
    add_gate_flags(p)
    p.add_argument(
        "--onnx-granularity",
        default="auto",
        choices=GRANULARITIES,
        help="int8 ONNX scales: auto (default) measures per-channel and per-tensor and keeps the more accurate",
    )
    p.add_argument(
        "--onnx-atol",
        type=float,
        default=1e-3,
        metavar="X",
        help="max |logits diff| allowed between the fp32 ONNX model and PyTorch (default 1e-3); "
        "a larger difference, or any differing greedy continuation, stops the export",
    )


def add_gate_flags(p: Any) -> None:
    """--max-accuracy-loss, --max-kl and --min-top1: what a quantized or exported model must keep."""
    p.add_argument(
        "--max-accuracy-loss", type=float, default=DEFAULT_MAX_ACCURACY_LOSS, metavar="X",
        help="refuse a quantized or exported model whose perplexity on the shipped text rises by more than X "
        f"(relative; default {DEFAULT_MAX_ACCURACY_LOSS:g}, i.e. {DEFAULT_MAX_ACCURACY_LOSS * 100:.0f}%%)",
    )  # fmt: skip
    p.add_argument(
        "--max-kl", type=float, default=DEFAULT_MAX_KL, metavar="X",
        help=f"refuse a quantized model whose next-token distributions drift by more than X nats of KL divergence "
        f"from its reference (mean over the shipped text; default {DEFAULT_MAX_KL:g})",
    )  # fmt: skip
    p.add_argument(
        "--min-top1", type=float, default=DEFAULT_MIN_TOP1, metavar="X",
        help="refuse a quantized model that keeps its reference's next token on less than X of the positions where "
        f"the reference is confident (p >= 0.5; default {DEFAULT_MIN_TOP1:g})",
    )  # fmt: skip


def gate_from_args(args: argparse.Namespace) -> AccuracyGate:
    """The accuracy gate the flags ask for."""
    return AccuracyGate(args.max_accuracy_loss, args.max_kl, args.min_top1)


def artefact_from_args(args: argparse.Namespace) -> ArtefactSpec:
    """The ArtefactSpec the parsed flags name, field by field (validated by whoever takes it: `check_request`,
    or `spec_from_args`)."""
    return fields_from_args(ArtefactSpec, args, granularity=args.onnx_granularity)


def spec_from_args(args: argparse.Namespace, layout: str = "baked") -> ArtefactSpec:
    """The validated ArtefactSpec for the parsed flags and `layout`."""
    return check_artefact(artefact_from_args(args), layout)


def add_artefact_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the `quantize` command."""
    p = sub.add_parser(
        "quantize",
        parents=[common],
        help="quantize (compressed-tensors) or export (ONNX) a merged model, with an accuracy report",
        description="Quantize a merged model folder (`packager merge` output) into a compressed-tensors checkpoint "
        "(w8a8, w8a16, w4a16, fp8: streamed tensor by tensor, memory flat in model size), or export it to ONNX "
        "(optionally int8). The result is measured against the merged model on a text packager ships: "
        "perplexity, top-1 agreement, KL divergence, logits difference, size; refused past --max-accuracy-loss. "
        "Written atomically to --output.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="merged model folder (packager merge --output)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the artefact (must not exist)")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    p.add_argument("--no-verify", action="store_true", help="skip the accuracy measurement (compressed-tensors)")
    add_artefact_flags(p, "tensor by tensor as the model is read")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    """`packager quantize`: make the artefact from a merged model folder and print its report."""
    spec = writable_spec(args)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise UserInputError(f"{args.model} is not a model folder (no config.json); pass a `packager merge` output")
    if not (spec.transforms or spec.streamed):
        raise UserInputError(f"nothing to do: pass --quantize {'|'.join(names('streamed'))} and/or --export onnx")
    report = make_artefact(args.model, spec, args.output, args.force, stderr_log(args), verify=not args.no_verify)
    print(json.dumps(report.to_dict(), indent=2)) if args.json else print(report.summary())
    return 0


def writable_spec(args: argparse.Namespace) -> ArtefactSpec:
    """The flags' spec for a command that writes an artefact: a load-time scheme has nothing to write."""
    spec = spec_from_args(args)
    if spec.load_quantization != "none":
        raise UserInputError(
            f"--quantize {spec.quantize} is applied by the runtime when the image loads the model, so there is "
            f"nothing to write; use it with `packager package --quantize {spec.quantize}`"
        )
    return spec


def stderr_log(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines on stderr, or nothing with --quiet."""
    return (lambda _line: None) if getattr(args, "quiet", False) else (lambda line: print(line, file=sys.stderr))
