"""Make the artefact that follows a merge: an ONNX export (a compressed-tensors checkpoint is written by the merge's
own stream, or by `packager quantize` through quantize/run.py)."""

from __future__ import annotations

from collections.abc import Callable

from packager.artefact.spec import ArtefactReport, ArtefactSpec
from packager.tasks import ModelTask, choose_task


def make_artefact(
    model_dir: str,
    spec: ArtefactSpec,
    output: str,
    force: bool,
    log: Callable[[str], None],
    task: ModelTask | None = None,
) -> ArtefactReport:
    """Export the merged model in `model_dir` to ONNX (int8 with spec.quantize int8) into `output`, atomically, in
    the class of `task` (default: what the folder's config names)."""
    from packager.io.staging import check_target

    check_target(output, force)  # before loading the model
    task = task or folder_task(model_dir)
    if task.name != "CAUSAL_LM":
        from packager.artefact.onnx_encoders import export_encoder

        return export_encoder(model_dir, spec, task, output, force, log)
    from packager.artefact.onnx_export import export_onnx

    return export_onnx(model_dir, spec, output, force=force, log=log)


def folder_task(model_dir: str) -> ModelTask:
    """The task a merged model folder's config.json names (its architecture), for `packager quantize --export`."""
    import json
    import os

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    return choose_task(None, {}, config if isinstance(config, dict) else {})
