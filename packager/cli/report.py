"""What the commands print: a short summary for people, a JSON document for machines."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from packager.cli.plan_text import adapter_kind, pinned_line, plan_lines, runtime_line, sizing_lines
from packager.plan import PackagePlan
from packager.planning.memory import available_memory
from packager.quantize.plan import QuantizePlan

if TYPE_CHECKING:  # importing package.py at run time would pull in the container modules
    from packager.package import PackageReport, Rendered
from packager.merge.run import MergeOutcome
from packager.model_files import LOCK_FILE


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _describe_inputs(plan: PackagePlan) -> list[str]:
    base, adapter = plan.base, plan.adapter
    fp = base.fingerprint
    where = f"{base.repo_id}@{base.commit or base.revision or 'main'}" if base.repo_id else base.path
    checkpoint = f" (checkpoint-{adapter.checkpoint})" if adapter.checkpoint is not None else ""
    return [
        f"adapter: {adapter.path}{checkpoint}  [{adapter_kind(adapter)}]",
        f"base:    {where}  [{base.source}; {fp.model_type}, {fp.num_hidden_layers} layers, hidden {fp.hidden_size}, "
        f"vocab {fp.vocab_size}, {fp.dtype}]",
        *_describe_merge(plan),
    ]


def _describe_merge(plan: PackagePlan) -> list[str]:
    if plan.merge is None:
        return ["merge:   none (the adapters are served unmerged, on the unmodified base)"]
    return [
        f"merge:   {plan.merge.engine} ({plan.merge.engine_reason})",
        *(f"note:    {note}" for note in plan.merge.notes),
    ]


def print_plan(plan: PackagePlan, lock_path: str | None) -> None:
    """Print what resolve found: adapter, base, merge engine and notes, changed tensors, and the lock if written."""
    for line in _describe_inputs(plan):
        print(line)
    if plan.merge is not None and plan.merge.engine == "stream":
        print(f"tensors: {plan.merge.changed_tensors} of {len(plan.merge.tensors)} change")
    if plan.quantize is not None:
        print(f"quantize: {_describe_quantize(plan.quantize)}")
        for note in plan.quantize.notes:
            print(f"note:    {note}")
    if plan.memory:
        steps = ", ".join(f"{s.step} {s.peak_bytes / 1e9:.2f} GB ({s.basis})" for s in plan.memory)
        print(f"memory:  {steps}; this machine has {available_memory() / 1e9:.1f} GB available")
    if lock_path:
        print(f"lock:    {lock_path} ({plan.pinned_files} files pinned by sha256)")


def _describe_quantize(quantize: QuantizePlan) -> str:
    group = f", groups of {quantize.group_size} columns" if quantize.group_size else ""
    return (
        f"{quantize.scheme} (compressed-tensors {quantize.preset}{group}) as the merge streams: "
        f"{len(quantize.targets)} weight tensors; left unquantized: {', '.join(quantize.ignore)}"
    )


def print_job(plan: PackagePlan) -> None:
    """The whole plan of `package --dry-run`: a summary block, then the details."""
    for line in plan_lines(plan):
        print(line)
    print_plan(plan, None)
    for line in sizing_lines(plan):
        print(line)
    print(f"runtime: {runtime_line(plan)}")
    if plan.image.model_image:
        print(f"base:    mounted from the base image {plan.image.model_image}")
    print(f"pinned:  {pinned_line(plan)}")


def print_rendered(rendered: Rendered) -> None:
    """The people's summary of `packager render`."""
    context = rendered.context
    print(f"rendered {context.path}  ({len(context.files)} files in the image, each pinned in the lock)")
    print(f"  lock:    {context.lock_path}")
    for note in rendered.notes:
        print(f"  note:    {note}")
    print(f"  build:   docker build {context.path}   (or: buildah bud, kaniko, `packager build {context.path}`)")
    for path in rendered.manifests.values():
        print(f"  deploy:  {path}  (the image by tag; `packager package --push` pins its digest)")
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in rendered.timings.items()))


def print_merge(outcome: MergeOutcome) -> None:
    """The people's summary of `packager merge`: inputs, parity, output shards, lock and timings."""
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
    """The JSON report of `packager merge --json`: output, parity, files, timings and the full plan."""
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
        source = f"from {report.base_model_image}" if report.base_model_image else "read-only"
        print(f"  base:     mounted {source} at {report.base_mount}, checked against the lock at start")
    for path in report.manifests.values():
        print(f"  deploy:   {path}" + ("" if report.digest else "  (the image by tag: pass --push to pin its digest)"))
    if report.signature:
        _print_signature(report.signature, report.image)
    if report.artefact:
        _print_artefact(report.artefact)
    for note in report.notes:
        print(f"  note:     {note}")
    print(f"  context:  {report.context}")
    print("  timings:  " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))


def _print_signature(signature: dict, image: str) -> None:
    print(
        f"  signed:   {signature['files_signed']} model files (model-signing) and the image (cosign format); BOM, "
        f"lock and signatures attached via the {signature['via']}"
    )
    print(f"  verify:   packager verify-image {image} --key {signature['public_key']}")


def _print_artefact(artefact: dict) -> None:
    acc = artefact["accuracy"]
    print(
        f"  model:    {artefact['kind']}, {artefact['size_bytes'] / 1e6:.1f} MB "
        f"({artefact['size_ratio']:.2f}x the unquantized merge)"
    )
    if acc is None:
        print("  accuracy: not measured (--no-verify)")
        return
    greedy = acc.get("greedy_token_agreement")
    print(
        f"  accuracy: perplexity {acc['perplexity_reference']:.3f} -> {acc['perplexity_candidate']:.3f} "
        f"({acc['perplexity_change']:+.2%}) on {acc['tokens']} tokens of the shipped text, top-1 "
        f"{acc['top1_agreement']:.1%}, KL {acc['kl_divergence']:.3g}, logits max |diff| "
        f"{acc['max_abs_logit_diff']:.3g}" + ("" if greedy is None else f", greedy tokens {greedy:.1%}")
    )
