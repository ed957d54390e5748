"""`packager quantize` on a merged folder, planned by `plan_folder_quantization`: the quantize pipeline
(calibrate, stream the quantized checkpoint, measure it against the folder it came from, refuse it past the
accuracy gate) in a staging folder that becomes the output."""

from __future__ import annotations

from collections.abc import Callable

from packager.accuracy.gate import AccuracyGate
from packager.accuracy.report import ArtefactReport, write_artefact_report
from packager.io.staging import check_target, staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.progress import Progress
from packager.quantize.folder import quantize_folder
from packager.quantize.pipeline import quantize_checkpoint
from packager.quantize.plan import QuantizePlan
from packager.quantize.reference import folder_reference

Log = Callable[[str], None]


def quantize_merged(
    model_dir: str, plan: QuantizePlan, output: str, gate: AccuracyGate, *, force: bool, verify: bool, log: Log
) -> ArtefactReport:
    """Quantize the merged model in `model_dir` into `output` as `plan` says (`plan_folder_quantization`),
    measured against the folder unless not `verify`, refused past `gate`; its report is written beside it."""
    check_target(output, force)
    for note in plan.notes:
        log(f"quantize: {note}")

    def write(staging: str, calibrated: dict[str, str]) -> None:
        """The folder's tensors, quantized as they stream into `staging` (GPTQ's where calibrated)."""
        progress = Progress("quantize", quiet=False)
        quantize_folder(model_dir, staging, plan, DEFAULT_MAX_SHARD_BYTES, progress, calibrated)

    reference = folder_reference(model_dir)
    with staged_directory(output, force) as staging:
        made = quantize_checkpoint(staging, output, plan, reference, write, gate, verify, _prefixed(log))
        write_artefact_report(made.report, staging)
    log(f"quantize: {made.report.summary()}")
    return made.report


def _prefixed(log: Log) -> Log:
    return lambda line: log(f"quantize: {line}")
