"""What the commands print: a short summary for people, a JSON document for machines."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from packager.plan import PackagePlan

if TYPE_CHECKING:  # importing package.py at run time would pull in the container modules
    from packager.package import PackageReport
from packager.resolve import LOCK_FILE
from packager.run_merge import MergeOutcome


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _describe_inputs(plan: PackagePlan) -> list[str]:
    base, adapter = plan.base, plan.adapter
    fp = base.fingerprint
    where = f"{base.repo_id}@{base.commit or base.revision or 'main'}" if base.repo_id else base.path
    checkpoint = f" (checkpoint-{adapter.checkpoint})" if adapter.checkpoint is not None else ""
    return [
        f"adapter: {adapter.path}{checkpoint}  [{adapter.peft_type}, r={adapter.settings.get('r', '?')}]",
        f"base:    {where}  [{base.source}; {fp.model_type}, {fp.num_hidden_layers} layers, hidden {fp.hidden_size}, "
        f"vocab {fp.vocab_size}, {fp.dtype}]",
        f"engine:  {plan.merge.engine} ({plan.merge.engine_reason})",
        *(f"note:    {note}" for note in plan.merge.notes),
    ]


def print_plan(plan: PackagePlan, lock_path: str | None) -> None:
    for line in _describe_inputs(plan):
        print(line)
    if plan.merge.engine == "stream":
        print(f"tensors: {plan.merge.changed_tensors} of {len(plan.merge.tensors)} change")
    if lock_path:
        print(f"lock:    {lock_path} ({len(plan.base.files) + len(plan.adapter.files)} files pinned by sha256)")


def print_merge(outcome: MergeOutcome) -> None:
    print(f"merged into {outcome.output}")
    for line in _describe_inputs(outcome.result.plan):
        print("  " + line)
    if outcome.parity is not None:
        print("  " + outcome.parity.summary())
    else:
        print(f"  parity skipped: {outcome.parity_skipped}")
    for entry in outcome.result.files:
        if entry.path.endswith(".safetensors"):
            print(f"  {entry.path}  {_mb(entry.size)}  sha256:{entry.sha256[:12]}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.timings.items())
    print(f"  lock: {os.path.join(outcome.output, LOCK_FILE)}   ({timings})")


def merge_report(outcome: MergeOutcome) -> dict[str, Any]:
    plan = outcome.result.plan
    return {
        "output": outcome.output,
        "lock": os.path.join(outcome.output, LOCK_FILE),
        "engine": plan.merge.engine,
        "engine_reason": plan.merge.engine_reason,
        "dtype": plan.merge.dtype,
        "notes": list(plan.merge.notes),
        "tensors": len(plan.merge.tensors),
        "changed_tensors": plan.merge.changed_tensors,
        "parity": dataclasses.asdict(outcome.parity) if outcome.parity else None,
        "parity_skipped": outcome.parity_skipped,
        "files": [dataclasses.asdict(f) for f in outcome.result.files],
        "timings": outcome.timings,
        "plan": plan.to_dict(),
    }


def print_package(report: PackageReport) -> None:
    """The people's summary of `packager package`."""
    print(f"built {report.image} ({report.layout} layout, {report.size / 1e9:.2f} GB, {len(report.layers)} layers)")
    print(f"  image id: {report.image_id}")
    if report.digest:
        print(f"  pushed:   {report.image}@{report.digest} ({(report.pushed_bytes or 0) / 1e6:.1f} MB uploaded)")
    print(f"  serves:   {', '.join(report.adapters)} on port {report.port}")
    if report.base_mount:
        print(f"  base:     mount the base read-only at {report.base_mount} (see {report.context}/compose.yaml)")
    if report.artefact:
        _print_artefact(report.artefact)
    for note in report.notes:
        print(f"  note:     {note}")
    print(f"  context:  {report.context}")
    print("  timings:  " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))


def _print_artefact(artefact: dict) -> None:
    acc = artefact["accuracy"]
    print(
        f"  model:    {artefact['kind']}, {artefact['size_bytes'] / 1e6:.1f} MB "
        f"({artefact['size_ratio']:.2f}x the unquantized merge)"
    )
    print(
        f"  accuracy: logits max |diff| {acc['max_abs_logit_diff']:.3g} (mean {acc['mean_abs_logit_diff']:.3g}), "
        f"top-1 {acc['top1_agreement']:.1%}, greedy tokens {acc['greedy_token_agreement']:.1%}, perplexity "
        f"{acc['perplexity_reference']:.3f} -> {acc['perplexity_candidate']:.3f} ({acc['perplexity_change']:+.2%})"
    )
