"""The merge command end to end: resolve, merge into a staging folder, check parity, then move into place."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass

from packager.artefact.spec import AccuracyGate, ArtefactReport
from packager.io.staging import check_target, staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES, OutputTensor
from packager.merge.stream import MergeResult, merge_adapter
from packager.merge.verify import DEFAULT_MAX_VERIFY_BYTES, ParityReport, check_loads_cleanly, check_parity
from packager.progress import Progress
from packager.quantize.calibrate import SPILL
from packager.resolve.memory import available_memory, check_memory, plan_memory
from packager.resolve.resolver import Resolved, ResolveRequest, require_merge, resolve


@dataclass(frozen=True)
class MergeOutcome:
    """What a merge produced: the output folder, the resolve result, the written files, parity (or why it was
    skipped) and timings."""

    output: str
    resolved: Resolved
    result: MergeResult
    parity: ParityReport | None
    parity_skipped: str | None
    timings: dict[str, float]
    artefact: ArtefactReport | None = None  # the compressed-tensors checkpoint, when the merge quantized


def run_merge(
    request: ResolveRequest,
    output: str,
    force: bool = False,
    quantize: str = "none",
    calibrate: str | None = None,
    **options,
) -> MergeOutcome:
    """Resolve `request`, then merge it into `output`, quantized as it streams with a compressed-tensors
    `quantize` scheme, by GPTQ on the `calibrate` text if given (see `merge_resolved` for the options)."""
    check_target(output, force)  # before resolving: an existing output fails at once
    started = time.monotonic()
    resolved = require_merge(resolve(request))
    if quantize != "none":
        from packager.resolve.quantize_plan import with_quantization

        resolved = with_quantization(resolved, quantize, calibrate)
    resolved = with_memory(resolved, options.get("verify", True))
    resolving = time.monotonic() - started
    outcome = merge_resolved(resolved, output, force, **options)
    return dataclasses.replace(outcome, timings={"resolve": resolving, **outcome.timings})


def merge_resolved(
    resolved: Resolved,
    output: str,
    force: bool = False,
    verify: bool = True,
    verify_max_bytes: int = DEFAULT_MAX_VERIFY_BYTES,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    quiet: bool = False,
    gate: AccuracyGate = AccuracyGate(),  # noqa: B008 - frozen, never mutated
) -> MergeOutcome:
    """Merge an already resolved adapter into `output` (quantized as it streams when the plan says so); on any
    failure, a refused accuracy included, nothing is left at `output`."""
    require_merge(resolved)
    check_target(output, force)
    timings: dict[str, float] = {}
    progress = Progress("merge", quiet)
    with staged_directory(output, force) as staging:
        started = time.monotonic()
        calibrated = calibrate_stream(resolved, staging, progress)
        if calibrated:
            timings["calibrate"], started = time.monotonic() - started, time.monotonic()
        result = merge_adapter(resolved, staging, max_shard_bytes, progress, calibrated)
        shutil.rmtree(os.path.join(staging, SPILL), ignore_errors=True)
        timings["merge"], started = time.monotonic() - started, time.monotonic()
        check_loads_cleanly(staging, resolved.plan.task)  # always, even unverified: no weight left to random init
        timings["load check"] = time.monotonic() - started
        if resolved.plan.quantize is not None:
            artefact = _measure_quantized(resolved, staging, output, verify, gate, progress, timings)
            skipped = "quantized as it streamed: measured against the unquantized merge instead (the artefact)"
            return MergeOutcome(os.path.abspath(output), resolved, result, None, skipped, timings, artefact)
        parity, skipped = None, _skip_reason(resolved, verify, verify_max_bytes)
        if skipped is None:
            progress.note("checking logits parity against PEFT ...")
            started = time.monotonic()
            parity = check_parity(resolved, staging)
            timings["verify"] = time.monotonic() - started
    return MergeOutcome(os.path.abspath(output), resolved, result, parity, skipped, timings)


def _measure_quantized(
    resolved: Resolved, staging: str, output: str, verify: bool, gate: AccuracyGate, progress: Progress, timings: dict
) -> ArtefactReport:
    """The quantized checkpoint's accuracy against the unquantized merge (unless --no-verify), refused past
    `gate`, and its report."""
    from packager.merge.merged_source import measure_merge
    from packager.quantize.measure import check_quantized, quantized_report

    plan, accuracy, started = resolved.plan.quantize, None, time.monotonic()
    if verify:
        progress.note(f"measuring {plan.scheme} against the unquantized merge on the shipped text ...")
        accuracy = measure_merge(resolved, staging)
        check_quantized(accuracy, plan, gate)
        timings["verify"] = time.monotonic() - started
    unquantized = sum(OutputTensor(t.name, t.dtype, t.shape).nbytes for t in resolved.plan.merge.tensors)
    return quantized_report(staging, output, plan, accuracy, unquantized, timings["merge"])


def calibrate_stream(resolved: Resolved, staging: str, progress: Progress) -> dict[str, str]:
    """--calibrate: GPTQ's weights, made before the stream (into the staging folder's spill), which writes them."""
    quantize = resolved.plan.quantize
    if quantize is None or quantize.calibration is None:
        return {}
    from packager.merge.merged_source import calibrate_merge

    progress.note(f"calibrating {quantize.scheme} by GPTQ on {quantize.calibration or 'the shipped text'} ...")
    return calibrate_merge(resolved, os.path.join(staging, SPILL), progress.note)


def with_memory(resolved: Resolved, verify: bool) -> Resolved:
    """`resolved` with each step's expected peak memory in its plan, refused now if a step cannot fit."""
    memory = plan_memory(resolved.plan, verify)
    check_memory(memory)
    return dataclasses.replace(resolved, plan=dataclasses.replace(resolved.plan, memory=memory))


def _skip_reason(resolved: Resolved, verify: bool, max_bytes: int) -> str | None:
    if not verify:
        return "--no-verify"
    size = sum(t.nbytes for t in resolved.weights.tensors.values())
    if size > max_bytes:
        return (
            f"base weights are {size / 1e9:.1f} GB (> --verify-max-gb {max_bytes / 1e9:g}); "
            "run `packager verify` on a larger machine"
        )
    needed = next((s.peak_bytes for s in resolved.plan.memory if s.step == "verify"), 0)
    if needed > available_memory():
        return (
            f"the parity check would need about {needed / 1e9:.1f} GB of memory and this machine has "
            f"{available_memory() / 1e9:.1f} GB available; run `packager verify` on a larger machine"
        )
    return None
