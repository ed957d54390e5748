"""ONNX for embedding models and classifiers: the merge exported in the plan's task class (optimum-onnx:
feature-extraction, text-classification, token-classification), validated against PyTorch, optionally quantized
to int8 by onnxruntime's dynamic quantization (per channel, or per tensor, or both measured), and measured on
sentences of the shipped text: cosine of the embeddings as the server pools them, or the labels' agreement.

CPU embedding and classification services are where ONNX int8 earns its place: on the real all-MiniLM-L6-v2 it
serves about four times the embeddings per second of the fp32 PyTorch model (bench/RESULTS.md).
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch

from packager.accuracy.logits import EncoderAccuracy, eval_text
from packager.accuracy.report import ArtefactReport, write_artefact_report
from packager.artefact.spec import ArtefactSpec
from packager.errors import UserInputError, ValidationError
from packager.io.staging import staged_directory
from packager.model_files import WEIGHT_SUFFIXES, folder_size
from packager.progress import Phases
from packager.tasks import TASKS, ModelTask

# the plan's task -> optimum's export task (onnxruntime's class for each: runtime/checkpoints.py ORT_CLASSES)
ENCODER_EXPORTS = {
    "FEATURE_EXTRACTION": "feature-extraction",
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
}
TEXTS = 48  # sentences and clauses of the shipped text the artefact is measured on


def export_encoder(
    merged_dir: str, spec: ArtefactSpec, task: ModelTask, output: str, force: bool, log: Callable[[str], None]
) -> ArtefactReport:
    """Write the ONNX encoder (fp32, or int8 with spec.quantize int8) into `output`, atomically, measured."""
    export_task = ENCODER_EXPORTS[task.name]
    phases = Phases("export", log)
    with phases("load", f"loading the merged model in fp32 as {task.auto_class}"):
        model = task.model_class().from_pretrained(merged_dir, dtype=torch.float32).eval()
        batch = _tokenizer(merged_dir)(sentences(), padding=True, truncation=True, return_tensors="pt")
    with phases("reference", "recording the PyTorch reference on sentences of the shipped text"):
        run = _Run(merged_dir, task, batch, outputs(model, batch, task, merged_dir))
    with staged_directory(output, force) as staging:
        fp32_dir = os.path.join(staging, "fp32") if spec.onnx_quantized else staging
        with phases("export", f"ONNX ({export_task}) with optimum-onnx"):
            _export(model, fp32_dir, export_task)
            del model
        with phases("validate", "validating against PyTorch"):
            accuracy = run.measure(fp32_dir)
            _check_fp32(accuracy, spec.onnx_atol)
        kind, details = "onnx-fp32", {"task": export_task, "atol": spec.onnx_atol}
        if spec.onnx_quantized:
            accuracy, int8_details = _int8(run, fp32_dir, staging, spec.granularity, phases)
            kind, details = "onnx-int8", details | int8_details
        check_encoder(accuracy, spec.max_accuracy_loss, kind)
        _copy_pooling(merged_dir, staging)
        report = _report(kind, output, staging, merged_dir, phases, accuracy, details)
        write_artefact_report(report, staging)
    log(f"export: {report.summary()}")
    return report


class _Run:
    """The inputs and the PyTorch reference an export is measured against."""

    def __init__(self, merged_dir: str, task: ModelTask, batch: dict, reference: dict) -> None:
        self.merged_dir, self.task, self.batch, self.reference = merged_dir, task, batch, reference

    def measure(self, folder: str) -> EncoderAccuracy:
        """The ONNX model in `folder`, as the runtime loads it, against the reference."""
        found = outputs(load_encoder(folder, self.task), self.batch, self.task, self.merged_dir)
        return compare_outputs(self.reference, found, self.task)


def _int8(run: _Run, fp32_dir: str, staging: str, granularity: str, phases: Phases) -> tuple[EncoderAccuracy, dict]:
    """Dynamic int8 with per-channel and/or per-tensor scales, each measured; the closer one kept."""
    from packager.artefact.onnx_export import best_int8

    best, measured = best_int8(fp32_dir, staging, granularity, phases, run.measure, lambda r: (r.loss, r.max_abs_diff))
    shutil.rmtree(fp32_dir)
    return measured[best], {"granularity": best, "candidates": {c: r.to_dict() for c, r in measured.items()}}


def _report(kind, output, staging, merged_dir, phases: Phases, accuracy, details: dict) -> ArtefactReport:
    size, reference = folder_size(staging, WEIGHT_SUFFIXES), folder_size(merged_dir, WEIGHT_SUFFIXES)
    details = {**details, "phase_seconds": phases.seconds}
    return ArtefactReport(kind, os.path.abspath(output), size, reference, phases.total, accuracy, details)


def sentences(count: int = TEXTS) -> list[str]:
    """Sentences and clauses of the shipped text: short and long inputs, so a batch is padded."""
    parts = [p.strip() for p in re.split(r"(?<=[.;:])\s+", eval_text()) if len(p.strip()) > 3]
    clauses = [c.strip() for p in parts for c in p.split(",") if len(c.strip()) > 3]
    return (parts + clauses)[:count]


def _tokenizer(folder: str):
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@torch.inference_mode()
def outputs(model: Any, batch: dict, task: ModelTask, folder: str) -> dict[str, torch.Tensor]:
    """What the server answers from: pooled embeddings (as its pooling says) or class probabilities, and the mask."""
    from packager.runtime.encoders import pool, read_pooling

    taken = {k: v for k, v in batch.items() if k in _arguments(model)}
    result = model(**taken)
    mask = batch["attention_mask"]
    if task.name == "FEATURE_EXTRACTION":
        return {"embeddings": pool(result.last_hidden_state.float(), mask, read_pooling(folder)), "mask": mask}
    return {"probs": result.logits.float().softmax(-1), "mask": mask}


def _arguments(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def compare_outputs(reference: dict, candidate: dict, task: ModelTask) -> EncoderAccuracy:
    """Embeddings: cosine per text; classifiers: the same label per text (per token kept by the mask)."""
    if task.name == "FEATURE_EXTRACTION":
        cosine = torch.nn.functional.cosine_similarity(reference["embeddings"], candidate["embeddings"], dim=-1)
        diff = (reference["embeddings"] - candidate["embeddings"]).abs().max().item()
        return EncoderAccuracy(len(cosine), diff, cosine_mean=cosine.mean().item(), cosine_min=cosine.min().item())
    keep = reference["mask"].bool() if task.name == "TOKEN_CLS" else torch.ones(len(reference["probs"]), dtype=bool)
    same = reference["probs"].argmax(-1)[keep] == candidate["probs"].argmax(-1)[keep]
    diff = (reference["probs"] - candidate["probs"]).abs().max().item()
    return EncoderAccuracy(int(keep.sum()), diff, label_agreement=same.float().mean().item())


def _check_fp32(report: EncoderAccuracy, atol: float) -> None:
    if report.max_abs_diff > atol or report.loss > 1e-4:
        raise ValidationError(
            f"the ONNX export does not match PyTorch: {report.summary()} (tolerance {atol:g}); this is an exporter "
            "problem for this architecture: ship the PyTorch runtime (drop --export), or raise --onnx-atol"
        )


def check_encoder(report: EncoderAccuracy, limit: float, kind: str) -> None:
    """Refuse an encoder artefact whose embeddings moved (1 - min cosine) or labels changed (1 - agreement) by
    more than `limit`."""
    if report.loss > limit:
        raise ValidationError(
            f"the {kind} model moved too far from the merge: {report.summary()}; limit {limit:.1%} from "
            "--max-accuracy-loss (1 - cosine, or the share of labels changed); nothing was written; export without "
            f"--quantize int8, or pass --max-accuracy-loss {round(report.loss + 0.005, 3):g} to accept it"
        )


def load_encoder(folder: str, task: ModelTask) -> Any:
    """The ONNX encoder in `folder` on onnxruntime, in the task's class, as the runtime loads it."""
    from packager.runtime.checkpoints import load_onnx

    return load_onnx(folder, task.name)


def check_encoder_exportable(model_type: str, task: ModelTask) -> None:
    """Refuse, before any heavy work, a task or model type optimum-onnx has no export for."""
    from packager.artefact.onnx_export import supported_tasks

    if task.name not in ENCODER_EXPORTS:
        served = ", ".join(t for t in ENCODER_EXPORTS)
        raise UserInputError(
            f"--export onnx serves causal LMs and {served} models, and this is {task.name} "
            f"({TASKS[task.name][1]}); package it without --export"
        )
    if ENCODER_EXPORTS[task.name] not in supported_tasks(model_type):
        raise UserInputError(
            f"optimum-onnx cannot export model type {model_type!r} for {ENCODER_EXPORTS[task.name]}; drop "
            "--export onnx (the PyTorch runtime serves it)"
        )


def _export(model: Any, folder: str, export_task: str) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, folder, task=export_task, do_validation=False)


def _copy_pooling(merged_dir: str, staging: str) -> None:
    """sentence-transformers' modules.json and pooling config travel too: the server pools as they say."""
    from packager.model_files import sentence_transformers_files

    for relative in sentence_transformers_files(merged_dir):
        os.makedirs(os.path.dirname(os.path.join(staging, relative)), exist_ok=True)
        shutil.copy2(os.path.join(merged_dir, relative), os.path.join(staging, relative))
