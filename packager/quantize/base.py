"""A base model quantized for the shared layout: LoRA adapters served by vLLM on a compressed-tensors base (what
QLoRA users ship). The same streamed quantizer as a merge, run on the base's own files; the result is identified by
the base's files and the scheme, so `package-base --quantize` and a shared `package --quantize` find each other's
work, and measured against the 16-bit base, alone and under each adapter."""

from __future__ import annotations

from collections.abc import Callable

from packager.artefact.accuracy import AccuracyReport
from packager.artefact.spec import AccuracyGate
from packager.io.staging import staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.plan import BaseSpec, QuantizePlan
from packager.progress import Progress
from packager.quantize.folder import quantize_folder
from packager.quantize.measure import check_quantized, measure_folder

Log = Callable[[str], None]


def quantize_base(base: BaseSpec, plan: QuantizePlan, target: str, gate: AccuracyGate, log: Log) -> AccuracyReport:
    """Write the base quantized by `plan` into `target` (atomically), measured against the 16-bit base and
    refused past `gate`; returns the measurement."""
    log(f"quantize: the base {base.label_id} as {plan.scheme} into {target} ...")
    with staged_directory(target, force=True) as staging:
        quantize_folder(base.path, staging, plan, DEFAULT_MAX_SHARD_BYTES, Progress("quantize", quiet=True))
        accuracy = measure_folder(base.path, staging, plan)
        check_quantized(accuracy, plan, gate)
    log(f"quantize: base {plan.scheme}: {accuracy.summary()}")
    return accuracy
