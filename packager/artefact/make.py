"""Make the artefact that follows a merge: an ONNX export (a compressed-tensors checkpoint is written by the merge's
own stream, or by `packager quantize` through quantize/run.py)."""

from __future__ import annotations

from collections.abc import Callable

from packager.artefact.spec import ArtefactReport, ArtefactSpec


def make_artefact(
    model_dir: str,
    spec: ArtefactSpec,
    output: str,
    force: bool,
    log: Callable[[str], None],
) -> ArtefactReport:
    """Export the merged model in `model_dir` to ONNX (int8 with spec.quantize int8) into `output`, atomically."""
    from packager.io.staging import check_target

    check_target(output, force)  # before loading the model
    from packager.artefact.onnx_export import export_onnx

    return export_onnx(model_dir, spec, output, force=force, log=log)
