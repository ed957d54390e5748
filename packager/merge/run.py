"""The merge command end to end: resolve, merge into a staging folder, check parity, then move into place."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from packager.accuracy.gate import AccuracyGate
from packager.accuracy.report import ArtefactReport
from packager.io.staging import check_target, staged_directory
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES
from packager.merge.stream import MergeResult, merge_adapter
from packager.merge.verify import DEFAULT_MAX_VERIFY_BYTES, ParityReport, check_loads_cleanly, check_parity
from packager.planning.memory import available_memory, check_memory, plan_memory
from packager.progress import Progress
from packager.quantize.pipeline import quantize_checkpoint
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
        from packager.planning.quantized import with_quantization

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
    progress = Progress("merge", quiet)
    with staged_directory(output, force) as staging:
        if resolved.plan.quantize is not None:
            return _merge_quantized(resolved, staging, output, max_shard_bytes, verify, gate, progress)
        timings: dict[str, float] = {}
        result = _write_merge(resolved, staging, max_shard_bytes, progress, {}, timings)
        parity, skipped = None, _skip_reason(resolved, verify, verify_max_bytes)
        if skipped is None:
            progress.note("checking logits parity against PEFT ...")
            started = time.monotonic()
            parity = check_parity(resolved, staging)
            timings["verify"] = time.monotonic() - started
    return MergeOutcome(os.path.abspath(output), resolved, result, parity, skipped, timings)


def _write_merge(
    resolved: Resolved, staging: str, max_shard_bytes: int, progress: Progress, calibrated: dict, timings: dict
) -> MergeResult:
    """The merge's stream into `staging`, then the load check (always, even unverified: no weight is left to a
    random init)."""
    started = time.monotonic()
    result = merge_adapter(resolved, staging, max_shard_bytes, progress, calibrated)
    timings["merge"], started = time.monotonic() - started, time.monotonic()
    check_loads_cleanly(staging, resolved.plan.task)
    timings["load check"] = time.monotonic() - started
    return result


def _merge_quantized(
    resolved: Resolved,
    staging: str,
    output: str,
    max_shard_bytes: int,
    verify: bool,
    gate: AccuracyGate,
    progress: Progress,
) -> MergeOutcome:
    """The merge quantized as it streams, by the quantize pipeline: measured against the unquantized merge made
    again from base and adapter (unless --no-verify), refused past `gate`."""
    from packager.merge.merged_source import merged_reference

    timings: dict[str, float] = {}

    def write(folder: str, calibrated: dict[str, str]) -> MergeResult:
        """The merge's stream, quantizing as it writes, then the load check."""
        return _write_merge(resolved, folder, max_shard_bytes, progress, calibrated, timings)

    plan, reference = resolved.plan.quantize, merged_reference(resolved)
    made = quantize_checkpoint(staging, output, plan, reference, write, gate, verify, progress.note, timings)
    skipped = "quantized as it streamed: measured against the unquantized merge instead (the artefact)"
    return MergeOutcome(os.path.abspath(output), resolved, made.written, None, skipped, timings, made.report)


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
