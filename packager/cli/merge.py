"""`packager merge`: torch-free flag checks first, then the plan (--dry-run) or the merge and its artefact."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from packager.cli.common import hash_base_ahead, resolve_request
from packager.errors import UserInputError

if TYPE_CHECKING:  # the CLI imports torch-backed modules only once a command needs them
    from packager.artefact.spec import ArtefactSpec
    from packager.tasks import ModelTask


def _print_merge_plan(args: argparse.Namespace, spec: ArtefactSpec) -> int:
    """--dry-run: the merge's plan (quantization and memory included), nothing written."""
    from packager.cli.report import print_plan
    from packager.merge.run import with_memory
    from packager.planning.quantized import with_quantization
    from packager.resolve.resolver import require_merge, resolve

    resolved = require_merge(resolve(resolve_request(args, hash_base=False)))
    if spec.streamed:
        resolved = with_quantization(resolved, spec.quantize, spec.calibrate)
    plan = with_memory(resolved, not args.no_verify).plan
    print(json.dumps(plan.to_dict(), indent=2, default=str)) if args.json else print_plan(plan, None)
    return 0


def _onnx_task(args: argparse.Namespace) -> ModelTask:
    """The task the ONNX export runs in, refused before the merge when optimum cannot export it for serving."""
    from packager.resolve.resolver import resolve

    task = resolve(resolve_request(args, hash_base=False)).plan.task
    if task.name not in ("CAUSAL_LM", "FEATURE_EXTRACTION", "SEQ_CLS", "TOKEN_CLS"):
        raise UserInputError(
            f"--export onnx serves causal LMs, embeddings and classifiers; merge this {task.name} model without it"
        )
    return task


def cmd_merge(args: argparse.Namespace) -> int:
    """packager merge: the adapter merged into --output (quantized or exported when asked), or its plan."""
    from packager.cli.artefact import stderr_log, writable_spec
    from packager.io.staging import check_target

    # torch-free checks first: a wrong flag or an existing output fails at once, not after `import torch`
    spec = writable_spec(args)
    artefact_output = args.artefact_output or f"{os.path.normpath(args.output)}-{spec.label}"
    if spec.transforms:
        check_target(artefact_output, args.force)  # refuse before the merge, not after it
    if args.dry_run:
        return _print_merge_plan(args, spec)
    check_target(args.output, args.force)
    hash_base_ahead(args.adapter, args.base, args.checkpoint)

    from packager.artefact.make import make_artefact
    from packager.cli.report import merge_report, print_merge
    from packager.merge.run import run_merge

    task = _onnx_task(args) if spec.transforms else None
    outcome = run_merge(
        resolve_request(args, hash_base=False),
        args.output,
        force=args.force,
        quantize=spec.quantize if spec.streamed else "none",
        calibrate=spec.calibrate,
        verify=not args.no_verify,
        verify_max_bytes=int(args.verify_max_gb * 1e9),
        max_shard_bytes=args.max_shard_size,
        quiet=args.quiet,
        gate=spec.gate,
    )
    artefact = (
        make_artefact(args.output, spec, artefact_output, args.force, stderr_log(args), task)
        if spec.transforms
        else outcome.artefact
    )
    if args.json:
        print(json.dumps({**merge_report(outcome), "artefact": artefact and artefact.to_dict()}, indent=2, default=str))
    else:
        print_merge(outcome)
        if artefact:
            print(f"  artefact: {artefact.path}\n  {artefact.summary()}")
    return 0
