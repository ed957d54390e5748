"""Weight-only int8/int4 quantization of a merged model with optimum-quanto, measured against the merge.

Why optimum-quanto (bench/RESULTS.md has the figures): it serializes int8 and int4 weights to safetensors
and reloads them on CPU and CUDA. torchao 0.18 was evaluated: transformers 4.57 saves its int8 weight-only
models only as pickle (`safe_serialization=False`), and its int4 path needs the CUDA-only `mslk` kernels.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable

from packager.artefact.accuracy import AccuracyReport, compare, record_reference
from packager.artefact.spec import STORED, ArtefactReport, Phases, folder_size, write_artefact_report
from packager.errors import PackagerError, UserInputError
from packager.io.staging import staged_directory
from packager.model_files import TOKENIZER_FILES, WEIGHT_SUFFIXES

SIDE_FILES = ("generation_config.json", *TOKENIZER_FILES)
KEEP_FULL_PRECISION = "lm_head"  # the output projection decides every token: left unquantized, as usual


def quantize_merged(
    merged_dir: str, scheme: str, output: str, force: bool = False, log: Callable[[str], None] = print
) -> ArtefactReport:
    """Quantize the merged model in `merged_dir` into `output` (atomically) and measure what it cost."""
    if scheme not in STORED:
        raise UserInputError(f"unknown stored quantization {scheme!r}; use one of {', '.join(STORED)}")
    phases = Phases("quantize", log)
    with phases("load", "loading the merged model"):
        model, tokenizer = load_merged(merged_dir)
    with phases("reference", "measuring the unquantized merge on the shipped text and prompts"):
        reference = record_reference(model, tokenizer.encode)
    with staged_directory(output, force) as staging:
        with phases("quantize", f"{scheme} weights with optimum-quanto"):
            _quantize_and_save(model, scheme, staging)
            del model
            copy_side_files(merged_dir, staging)
        with phases("measure", "reloading the artefact and measuring it"):
            accuracy = compare(reference, load_quantized(staging))  # the artefact as written, as the image loads it
        report = _report(accuracy, scheme, merged_dir, staging, phases, output)
        write_artefact_report(report, staging)
    log(f"quantize: {report.summary()}")
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


def _quantize_and_save(model, scheme: str, staging: str) -> None:
    quanto = _import_quanto()
    weights = quanto.qint8 if scheme == "int8" else quanto.qint4
    quantized = quanto.QuantizedModelForCausalLM.quantize(model, weights=weights, exclude=KEEP_FULL_PRECISION)
    quantized.save_pretrained(staging)
    readme = os.path.join(staging, "README.md")  # a hub model card template quanto writes
    if os.path.exists(readme):
        os.remove(readme)


def load_quantized(folder: str):
    """The quantized model as the runtime loads it: a transformers model with quanto layers."""
    quanto = _import_quanto()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quanto.QuantizedModelForCausalLM.from_pretrained(folder)._wrapped.eval()


def _import_quanto():
    try:
        import optimum.quanto as quanto
    except ImportError:
        raise PackagerError("int8/int4 quantization needs optimum-quanto: pip install 'packager[quantize]'") from None
    return quanto


def _report(
    accuracy: AccuracyReport, scheme: str, merged_dir: str, staging: str, phases: Phases, output: str
) -> ArtefactReport:
    return ArtefactReport(
        kind=f"quanto-{scheme}",
        path=os.path.abspath(output),
        size_bytes=folder_size(staging, WEIGHT_SUFFIXES),
        reference_size_bytes=folder_size(merged_dir, WEIGHT_SUFFIXES),
        seconds=phases.total,
        accuracy=accuracy,
        details={
            "library": "optimum-quanto",
            "weights": f"q{scheme}",
            "excluded": [KEEP_FULL_PRECISION],
            "phase_seconds": phases.seconds,
        },
    )


def copy_side_files(source: str, target: str) -> None:
    """Tokenizer and generation config travel with every artefact."""
    for name in SIDE_FILES:
        path = os.path.join(source, name)
        if os.path.isfile(path) and not os.path.exists(os.path.join(target, name)):
            shutil.copy2(path, os.path.join(target, name))
