"""The one artefact dispatcher: quantize (optimum-quanto) or export (ONNX) a merged model, chosen by the spec."""

from __future__ import annotations

from collections.abc import Callable

from packager.artefact.spec import ArtefactReport, ArtefactSpec


def make_artefact(
    model_dir: str, spec: ArtefactSpec, output: str, force: bool, log: Callable[[str], None]
) -> ArtefactReport:
    """Quantize (optimum-quanto) or export (ONNX) the merged model in `model_dir` into `output`, atomically."""
    from packager.io.staging import check_target

    check_target(output, force)  # before loading the model
    if spec.backend == "onnx":
        from packager.artefact.onnx_export import export_onnx

        return export_onnx(model_dir, spec, output, force=force, log=log)
    from packager.artefact.quantize import quantize_merged

    return quantize_merged(model_dir, spec.quantize, output, force=force, log=log)
