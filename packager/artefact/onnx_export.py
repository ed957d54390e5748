"""Export a merged model to ONNX (optimum-onnx, `text-generation-with-past`), validate it against PyTorch with an
explicit tolerance, and optionally quantize it to int8 with onnxruntime's dynamic quantization.

optimum's own validation only logs a warning when outputs differ and the export still succeeds; here a
failed validation stops the package. The model is loaded once: export, reference run and validation share it.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable

from packager.accuracy.logits import AccuracyReport, ReferenceRun, compare, record_reference
from packager.accuracy.report import ArtefactReport, write_artefact_report
from packager.artefact.spec import ArtefactSpec
from packager.errors import PackagerError, UserInputError, ValidationError
from packager.io.staging import staged_directory
from packager.model_files import WEIGHT_SUFFIXES, folder_size
from packager.progress import Phases

TASK = "text-generation-with-past"
ONNX_FILES = ("model.onnx", "model.onnx_data")


def export_onnx(
    merged_dir: str, spec: ArtefactSpec, output: str, force: bool = False, log: Callable[[str], None] = print
) -> ArtefactReport:
    """Write the ONNX model (fp32, or int8 when spec.quantize is int8) into `output`, atomically."""
    with open(os.path.join(merged_dir, "config.json")) as f:
        check_exportable(json.load(f).get("model_type", ""))
    phases = Phases("export", log)
    with phases("load", "loading the merged model in fp32"):
        model, tokenizer = load_merged(merged_dir, dtype="fp32")
    # before the export: an exporter that changed the model in memory must not change the reference too
    with phases("reference", "recording the PyTorch reference on the shipped text and prompts"):
        reference = record_reference(model, tokenizer.encode)
    with staged_directory(output, force) as staging:
        fp32_dir = os.path.join(staging, "fp32") if spec.onnx_quantized else staging
        with phases("export", f"ONNX ({TASK}) with optimum-onnx"):
            _export(model, fp32_dir)
            del model
        with phases("validate", "validating against PyTorch"):
            fp32 = _validate(reference, load_ort(fp32_dir), spec.onnx_atol)
        log(f"export: fp32 ONNX: {fp32.summary()}")
        details = {"task": TASK, "atol": spec.onnx_atol, "fp32_onnx_bytes": folder_size(fp32_dir, WEIGHT_SUFFIXES)}
        accuracy, kind = fp32, "onnx-fp32"
        if spec.onnx_quantized:
            accuracy, int8_details = _quantize_int8(reference, fp32_dir, staging, spec.granularity, phases)
            details.update(int8_details, fp32_validation=fp32.to_dict())
            shutil.rmtree(fp32_dir)
            kind = "onnx-int8"
        details["phase_seconds"] = phases.seconds
        size = folder_size(staging, WEIGHT_SUFFIXES)
        report = ArtefactReport(
            kind,
            os.path.abspath(output),
            size,
            folder_size(merged_dir, WEIGHT_SUFFIXES),
            phases.total,
            accuracy,
            details,
        )
        write_artefact_report(report, staging)
    log(f"export: {report.summary()}")
    return report


def load_merged(merged_dir: str, dtype: str = "auto"):
    """The merged model and its tokenizer, as the runtime would load them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(
            merged_dir, dtype=torch.float32 if dtype == "fp32" else "auto"
        ).eval()
    return model, AutoTokenizer.from_pretrained(merged_dir)


def supported_tasks(model_type: str) -> set[str]:
    """The tasks optimum-onnx exports this model type for (none for an unknown type)."""
    _import_optimum()
    from optimum.exporters.onnx import model_configs  # noqa: F401  (registers the ONNX export configs)
    from optimum.exporters.tasks import TasksManager

    try:
        return set(
            TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx", library_name="transformers")
        )
    except KeyError:
        return set()


def check_exportable(model_type: str) -> None:
    """Refuse, before any heavy work, a model type optimum-onnx has no text-generation export for."""
    if TASK not in supported_tasks(model_type):
        raise UserInputError(
            f"optimum-onnx cannot export model type {model_type!r} for {TASK}; drop --export onnx "
            "(the PyTorch runtime serves it, --quantize int8|int4 included)"
        )


def _import_optimum() -> None:
    try:
        import onnxruntime  # noqa: F401
        import optimum.exporters.onnx  # noqa: F401
    except ImportError:
        raise PackagerError("ONNX export needs optimum-onnx and onnxruntime: pip install 'packager[onnx]'") from None


def _export(model, folder: str) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, folder, task=TASK, do_validation=False)


def load_ort(folder: str):
    """The ONNX model in `folder` on onnxruntime (CPU), as the runtime loads it."""
    from optimum.onnxruntime import ORTModelForCausalLM

    return ORTModelForCausalLM.from_pretrained(folder)


def _validate(reference: ReferenceRun, session, atol: float) -> AccuracyReport:
    """fp32 ONNX must match PyTorch: logits within `atol` and every greedy continuation identical."""
    report = compare(reference, session)
    if report.max_abs_logit_diff > atol or report.greedy_exact_prompts < 1.0:
        raise ValidationError(
            f"the ONNX export does not match PyTorch: max |logits diff| {report.max_abs_logit_diff:.3g} "
            f"(tolerance {atol:g}), greedy continuations identical for {report.greedy_exact_prompts:.0%} of prompts; "
            "this is an exporter problem for this architecture: ship the PyTorch runtime (drop --export), "
            "or raise --onnx-atol if the difference is acceptable"
        )
    return report


def _quantize_int8(
    reference: ReferenceRun, fp32_dir: str, staging: str, granularity: str, phases: Phases
) -> tuple[AccuracyReport, dict]:
    """Dynamic int8 quantization; `auto` measures per-channel and per-tensor scales and keeps the more accurate."""

    def measure(folder: str) -> AccuracyReport:
        """One candidate's accuracy against the fp32 reference, logged as it is known."""
        report = compare(reference, load_ort(folder))
        phases.log(f"export: int8 {os.path.basename(folder)}: {report.summary()}")
        return report

    best, measured = best_int8(fp32_dir, staging, granularity, phases, measure, _error_rank)
    details = {
        "granularity": best,
        "granularity_requested": granularity,
        "candidates": {c: r.to_dict() for c, r in measured.items()},
    }
    return measured[best], details


def best_int8(fp32_dir: str, staging: str, granularity: str, phases: Phases, measure, rank) -> tuple[str, dict]:
    """onnxruntime's dynamic int8 of the export in `fp32_dir` with per-channel and per-tensor scales (auto) or the
    one asked for, each measured by `measure(folder)`; the lowest `rank(report)` moved into `staging`, the other
    candidates removed. Returns the choice and every candidate's report."""
    candidates = ["per-channel", "per-tensor"] if granularity == "auto" else [granularity]
    measured = {}
    for choice in candidates:
        folder = os.path.join(staging, f"int8-{choice}")
        with phases(f"int8 {choice}", f"int8 dynamic quantization, {choice} scales"):
            quantize_dynamic_into(fp32_dir, folder, per_channel=choice == "per-channel")
        with phases(f"measure {choice}", f"measuring int8 {choice}"):
            measured[choice] = measure(folder)
    best = min(measured, key=lambda c: rank(measured[c]))
    for choice in candidates:
        folder = os.path.join(staging, f"int8-{choice}")
        if choice == best:
            for name in os.listdir(folder):
                os.replace(os.path.join(folder, name), os.path.join(staging, name))
        shutil.rmtree(folder)
    return best, measured


def _error_rank(report: AccuracyReport) -> tuple[float, float, float]:
    """Lower is better: top-1 disagreement first, then greedy disagreement, then the mean logits error."""
    return (1 - report.top1_agreement, 1 - report.greedy_token_agreement, report.mean_abs_logit_diff)


def quantize_dynamic_into(fp32_dir: str, folder: str, per_channel: bool) -> None:
    """onnxruntime's dynamic int8 quantization of the fp32 export in `fp32_dir` into a new `folder`, with the
    export's other files (config, tokenizer)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    os.makedirs(folder)
    source = os.path.join(fp32_dir, "model.onnx")
    large = os.path.exists(os.path.join(fp32_dir, "model.onnx_data"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            source,
            os.path.join(folder, "model.onnx"),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=large,
        )
    for name in os.listdir(fp32_dir):
        if name not in ONNX_FILES and os.path.isfile(os.path.join(fp32_dir, name)):
            shutil.copy2(os.path.join(fp32_dir, name), os.path.join(folder, name))
