"""The one artefact dispatcher: quantize (optimum-quanto) or export (ONNX) a merged model, chosen by the spec."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from packager.artefact.spec import ArtefactReport, ArtefactSpec
from packager.errors import UserInputError


def check_causal_lm(model_dir: str) -> None:
    """Quantized and exported artefacts are made of causal LMs: refuse another model (its config's class) first."""
    from packager.tasks import base_task

    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return  # the quantizer or exporter says what is wrong with the folder
    task = base_task(config if isinstance(config, dict) else {})
    if task not in (None, "CAUSAL_LM"):
        raise UserInputError(
            f"--quantize and --export apply to causal LMs, and the model at {model_dir} is a {task} model; "
            "package or serve it without them"
        )


def make_artefact(
    model_dir: str, spec: ArtefactSpec, output: str, force: bool, log: Callable[[str], None]
) -> ArtefactReport:
    """Quantize (optimum-quanto) or export (ONNX) the merged model in `model_dir` into `output`, atomically."""
    from packager.io.staging import check_target

    check_target(output, force)  # before loading the model
    check_causal_lm(model_dir)
    if spec.backend == "onnx":
        from packager.artefact.onnx_export import export_onnx

        return export_onnx(model_dir, spec, output, force=force, log=log)
    from packager.artefact.quantize import quantize_merged

    return quantize_merged(model_dir, spec.quantize, output, force=force, log=log)
