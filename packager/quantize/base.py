"""A base model quantized for the shared layout: LoRA adapters served by vLLM on a compressed-tensors base (what
QLoRA users ship). The quantize pipeline run on the base's own files; the result is identified by the base's files
and the scheme, so `package-base --quantize` and a shared `package --quantize` find each other's work, and
measured against the 16-bit base (alone here; under each adapter by the package step)."""

from __future__ import annotations

from collections.abc import Callable

from packager.accuracy.gate import AccuracyGate
from packager.accuracy.report import ArtefactReport
from packager.io.staging import staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.progress import Progress
from packager.quantize.folder import quantize_folder
from packager.quantize.pipeline import quantize_checkpoint
from packager.quantize.plan import QuantizePlan
from packager.quantize.reference import folder_reference

Log = Callable[[str], None]


def quantize_base(
    base: str, label: str, plan: QuantizePlan, target: str, gate: AccuracyGate, log: Log
) -> ArtefactReport:
    """Write the base in folder `base` (named `label`) quantized by `plan` into `target` (atomically), measured
    against the 16-bit base and refused past `gate`; returns the checkpoint's report."""
    log(f"quantize: the base {label} as {plan.scheme} into {target} ...")

    def write(staging: str, calibrated: dict[str, str]) -> None:
        """The base's tensors, quantized as they stream into `staging`."""
        quantize_folder(base, staging, plan, DEFAULT_MAX_SHARD_BYTES, Progress("quantize", quiet=True), calibrated)

    with staged_directory(target, force=True) as staging:
        made = quantize_checkpoint(staging, target, plan, folder_reference(base), write, gate, log=lambda _: None)
    log(f"quantize: base {plan.scheme}: {made.report.accuracy.summary()}")
    return made.report
