"""How far a quantized checkpoint moved from the unquantized merge, in memory that does not grow with the model.

Both models run module by module (accuracy/lazy_model.py) on the shipped text: the reference reads the merged
weights (made again from base + adapter, or read from an unquantized folder), the candidate reads the compressed
checkpoint as written, decompressed by compressed-tensors, with its activations fake-quantized per token where the
scheme quantizes them at run time. Peak memory: the largest single weight in fp32, the activations of one
sequence, and two (sequence x vocabulary) logits tensors; the figures come from `compare_logits`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from packager.accuracy.gate import AccuracyGate, check_accuracy
from packager.accuracy.lazy_model import WeightSource, build_empty, lazy_logits
from packager.accuracy.logits import MAX_TEXT_TOKENS, AccuracyReport, compare_logits, eval_text
from packager.accuracy.report import ArtefactReport
from packager.model_files import TOKENIZER_VOCABULARIES, WEIGHT_SUFFIXES, folder_size
from packager.quantize.plan import QuantizePlan
from packager.quantize.schemes import get_scheme
from packager.quantize.sources import FolderSource, activation_quantizer
from packager.quantize.tensors import compression_scheme

Sources = Callable[[torch.nn.Module], WeightSource]


def measure(folder: str, plan: QuantizePlan, reference: Sources, candidate: Sources | None = None) -> AccuracyReport:
    """The quantized checkpoint in `folder` (or the weights `candidate(model)` gives, run as its scheme runs them)
    against the weights `reference(model)` gives, on the shipped text."""
    model = _skeleton(folder)
    ids = text_ids(folder)
    expected = lazy_logits(model, reference(model), ids)
    found_in = candidate(model) if candidate else FolderSource(folder, model, plan)
    found = lazy_logits(model, found_in, ids, activation_quantizer(plan))
    return compare_logits(expected, found, ids)


def _skeleton(folder: str) -> torch.nn.Module:
    """The folder's causal LM class with no weights: its config without the quantization_config, so every Linear
    is a plain one that takes the decompressed weight."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    return build_empty(config, AutoModelForCausalLM)


def text_ids(folder: str) -> torch.Tensor:
    """The shipped text through the folder's tokenizer, at most MAX_TEXT_TOKENS tokens, as a (1, n) batch; a
    folder without a tokenizer gets fixed ids spread over its vocabulary (the figures then compare, nothing more)."""
    from transformers import AutoConfig, AutoTokenizer

    if not any(os.path.isfile(os.path.join(folder, n)) for n in TOKENIZER_VOCABULARIES):
        config = AutoConfig.from_pretrained(folder)
        generator = torch.Generator().manual_seed(1234)
        return torch.randint(0, config.get_text_config().vocab_size, (1, MAX_TEXT_TOKENS // 2), generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return torch.tensor([tokenizer.encode(eval_text())[:MAX_TEXT_TOKENS]])


def quantized_report(
    folder: str, output: str, plan: QuantizePlan, accuracy: AccuracyReport | None, reference_bytes: int, seconds: float
) -> ArtefactReport:
    """The ArtefactReport of a compressed-tensors checkpoint written into `folder` (to become `output`)."""
    import compressed_tensors

    scheme = compression_scheme(plan.preset, plan.group_size)
    return ArtefactReport(
        kind=f"compressed-tensors-{plan.scheme}",
        path=os.path.abspath(output),
        size_bytes=folder_size(folder, WEIGHT_SUFFIXES),
        reference_size_bytes=reference_bytes,
        seconds=round(seconds, 3),
        accuracy=accuracy,
        details={
            "library": f"compressed-tensors {compressed_tensors.__version__}",
            "preset": plan.preset,
            "format": scheme.format,
            "group_size": plan.group_size,
            "quantized_tensors": len(plan.targets),
            "ignore": list(plan.ignore),
            "notes": list(plan.notes),
        },
    )


def check_quantized(report: AccuracyReport, plan: QuantizePlan, gate: AccuracyGate) -> None:
    """Refuse a checkpoint past any limit of `gate`, naming what to try instead."""
    check_accuracy(report, gate, f"--quantize {plan.scheme}", get_scheme(plan.scheme).refused_hint)
