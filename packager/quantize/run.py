"""`packager quantize` on a merged folder: plan, then the quantize pipeline (calibrate, stream the quantized
checkpoint, measure it against the folder it came from, refuse it past the accuracy gate) in a staging folder
that becomes the output."""

from __future__ import annotations

from collections.abc import Callable

from packager.accuracy.gate import AccuracyGate
from packager.accuracy.report import ArtefactReport, write_artefact_report
from packager.io.staging import check_target, staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.progress import Progress
from packager.quantize.folder import quantize_folder
from packager.quantize.pipeline import quantize_checkpoint
from packager.quantize.plan import check_tokenizer, plan_folder_quantization, with_calibration
from packager.quantize.reference import folder_reference


def quantize_merged(
    model_dir: str,
    scheme: str,
    output: str,
    force: bool,
    verify: bool,
    log: Callable[[str], None],
    calibrate: str | None = None,
    gate: AccuracyGate = AccuracyGate(),  # noqa: B008 - frozen, never mutated
) -> ArtefactReport:
    """Quantize the merged model in `model_dir` into `output` with `scheme` (a compressed-tensors one), by GPTQ on
    the `calibrate` text when given, refused past `gate`."""
    check_target(output, force)
    plan = with_calibration(plan_folder_quantization(model_dir, scheme), calibrate)
    if plan.calibration is not None:
        check_tokenizer(model_dir)  # before any work
    for note in plan.notes:
        log(f"quantize: {note}")

    def write(staging: str, calibrated: dict[str, str]) -> None:
        """The folder's tensors, quantized as they stream into `staging` (GPTQ's where calibrated)."""
        progress = Progress("quantize", quiet=False)
        quantize_folder(model_dir, staging, plan, DEFAULT_MAX_SHARD_BYTES, progress, calibrated)

    with staged_directory(output, force) as staging:
        made = quantize_checkpoint(
            staging, output, plan, folder_reference(model_dir), write, gate, verify, _prefixed(log)
        )
        write_artefact_report(made.report, staging)
    log(f"quantize: {made.report.summary()}")
    return made.report


def _prefixed(log: Callable[[str], None]) -> Callable[[str], None]:
    return lambda line: log(f"quantize: {line}")
