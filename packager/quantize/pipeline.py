"""The one way packager makes a quantized checkpoint, whoever asks (`merge --quantize`, `quantize`, `package`,
`package-base`): calibrate (GPTQ, when the plan says so) -> write (the caller's stream: the merge's, or a
folder's) -> measure against the unquantized reference -> refuse past the accuracy gate -> report.

What differs between callers is only the `Reference`, the unquantized model the checkpoint comes from and is
measured against (a model folder, or the merge made again from base and adapter: merge/merged_source.py), and
the `write` step. The steps run inside the caller's staging folder, so a refusal leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packager.accuracy.gate import AccuracyGate
from packager.accuracy.report import ArtefactReport
from packager.quantize.calibrate import SPILL, calibrate_model
from packager.quantize.measure import check_quantized, measure, quantized_report
from packager.quantize.plan import QuantizePlan
from packager.quantize.reference import Reference

Log = Callable[[str], None]
Write = Callable[[str, dict[str, str]], Any]  # (staging folder, GPTQ's spilled weights) -> the stream's result


@dataclass(frozen=True)
class Quantized:
    """What the pipeline made: the checkpoint's report, what the write step returned, and the steps' seconds."""

    report: ArtefactReport
    written: Any
    timings: dict[str, float]


def quantize_checkpoint(
    staging: str,
    output: str,
    plan: QuantizePlan,
    reference: Reference,
    write: Write,
    gate: AccuracyGate,
    verify: bool = True,
    log: Log = print,
    timings: dict[str, float] | None = None,
) -> Quantized:
    """Calibrate, write, measure, check and report a checkpoint quantized by `plan` inside `staging` (to become
    `output`); refused past `gate` (nothing is reported, and the caller's staging folder goes). The steps'
    seconds go into `timings` (the write step may add its own)."""
    timings = {} if timings is None else timings
    started = time.monotonic()
    calibrated: dict[str, str] = {}
    if plan.calibration is not None:
        log(f"calibrating {plan.scheme} by GPTQ on {plan.calibration or 'the shipped text'} ...")
        calibrated = calibrate_model(reference, plan, os.path.join(staging, SPILL), log)
        timings["calibrate"] = time.monotonic() - started
    written = write(staging, calibrated)
    shutil.rmtree(os.path.join(staging, SPILL), ignore_errors=True)
    seconds = time.monotonic() - started
    accuracy = None
    if verify:
        log(f"measuring {plan.scheme} against {reference.what} on the shipped text ...")
        measured = time.monotonic()
        accuracy = measure(staging, plan, reference.weights)
        check_quantized(accuracy, plan, gate)
        timings["verify"] = time.monotonic() - measured
    report = quantized_report(staging, output, plan, accuracy, reference.size_bytes, seconds)
    return Quantized(report, written, timings)
