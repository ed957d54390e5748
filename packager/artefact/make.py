"""Make an artefact from a merged model folder (`packager quantize`): a compressed-tensors checkpoint (the
quantize pipeline, quantize/run.py) or an ONNX export; within `package`, the merge's own stream writes the
checkpoint and only the export comes here."""

from __future__ import annotations

from collections.abc import Callable

from packager.accuracy.report import ArtefactReport
from packager.artefact.spec import ArtefactSpec
from packager.tasks import ModelTask, choose_task


def make_artefact(
    model_dir: str,
    spec: ArtefactSpec,
    output: str,
    force: bool,
    log: Callable[[str], None],
    task: ModelTask | None = None,
    verify: bool = True,
) -> ArtefactReport:
    """Quantize the merged model in `model_dir` into a compressed-tensors checkpoint (measured unless not
    `verify`), or export it to ONNX (int8 with spec.quantize int8), into `output`, atomically, in the class of
    `task` (default: what the folder's config names)."""
    from packager.io.staging import check_target

    check_target(output, force)  # before loading the model
    if spec.streamed:
        from packager.quantize.plan import plan_folder_quantization
        from packager.quantize.run import quantize_merged

        plan = plan_folder_quantization(model_dir, spec.quantize, spec.calibrate)  # before any work
        return quantize_merged(model_dir, plan, output, spec.gate, force=force, verify=verify, log=log)
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
