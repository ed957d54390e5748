"""`packager quantize` on a merged folder: plan, stream the quantized checkpoint into a staging folder, measure it
against the folder it came from, refuse it past the accuracy limit, and move it into place."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from packager.artefact.spec import ArtefactReport, ArtefactSpec, folder_size, write_artefact_report
from packager.io.staging import check_target, staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.model_files import WEIGHT_SUFFIXES
from packager.progress import Progress
from packager.quantize.calibrate import SPILL, calibrate_folder
from packager.quantize.folder import quantize_folder
from packager.quantize.measure import check_quantized, measure_folder, quantized_report
from packager.resolve.quantize_plan import check_tokenizer, plan_folder_quantization, with_calibration


def quantize_merged(
    model_dir: str, spec: ArtefactSpec, output: str, force: bool, verify: bool, log: Callable[[str], None]
) -> ArtefactReport:
    """Quantize the merged model in `model_dir` into `output` with spec.quantize (a compressed-tensors scheme)."""
    check_target(output, force)
    plan = with_calibration(plan_folder_quantization(model_dir, spec.quantize), spec.calibrate)
    if plan.calibration is not None:
        check_tokenizer(model_dir)  # before any work
    for note in plan.notes:
        log(f"quantize: {note}")
    started = time.monotonic()
    with staged_directory(output, force) as staging:
        calibrated = {}
        if plan.calibration is not None:
            log(f"quantize: calibrating {plan.scheme} by GPTQ on {plan.calibration or 'the shipped text'} ...")
            calibrated = calibrate_folder(model_dir, plan, os.path.join(staging, SPILL), log)
        progress = Progress("quantize", quiet=False)
        quantize_folder(model_dir, staging, plan, DEFAULT_MAX_SHARD_BYTES, progress, calibrated)
        shutil.rmtree(os.path.join(staging, SPILL), ignore_errors=True)
        seconds = time.monotonic() - started
        accuracy = None
        if verify:
            log(f"quantize: measuring {plan.scheme} against {model_dir} on the shipped text ...")
            accuracy = measure_folder(model_dir, staging, plan)
            check_quantized(accuracy, plan, spec.gate)
        report = quantized_report(staging, output, plan, accuracy, folder_size(model_dir, WEIGHT_SUFFIXES), seconds)
        write_artefact_report(report, staging)
    log(f"quantize: {report.summary()}")
    return report
