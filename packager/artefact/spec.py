"""What the image serves, decided from the flags before any work: the merged model as is, quantized into a
compressed-tensors checkpoint in the merge's own stream (w8a8, w8a16, w4a16, fp8: what vLLM loads), exported to
ONNX (optionally int8), or quantized by the runtime at load (GPU).

`ArtefactSpec` is pure and frozen; the merge stream writes the compressed-tensors checkpoints and
`onnx_export.py` the ONNX artefacts; the report of each (`ArtefactReport`) travels into the package summary, the
JSON report and an image label.
"""

from __future__ import annotations

from dataclasses import dataclass

from packager.accuracy.gate import DEFAULT_MAX_ACCURACY_LOSS, DEFAULT_MAX_KL, DEFAULT_MIN_TOP1, AccuracyGate
from packager.errors import UserInputError
from packager.quantize.schemes import RENAMED, Scheme, get_scheme, names, schemes

EXPORT_CHOICES = ("none", "onnx")
GRANULARITIES = ("auto", "per-channel", "per-tensor")


@dataclass(frozen=True)
class ArtefactSpec:
    """What becomes of the merged model, from --quantize and --export (validated by `artefact_spec`)."""

    quantize: str = "none"
    export: str = "none"
    granularity: str = "auto"  # ONNX int8 only: per-channel or per-tensor scales, auto = measure both
    onnx_atol: float = 1e-3  # max |logits diff| of the fp32 ONNX model vs PyTorch before it is refused
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS  # relative perplexity increase allowed
    calibrate: str | None = None  # GPTQ on this text ("": the shipped one); None: round-to-nearest
    max_kl: float = DEFAULT_MAX_KL
    min_top1: float = DEFAULT_MIN_TOP1

    @property
    def gate(self) -> AccuracyGate:
        """The accuracy a quantized model must keep (--max-accuracy-loss, --max-kl, --min-top1)."""
        return AccuracyGate(self.max_accuracy_loss, self.max_kl, self.min_top1)

    @property
    def backend(self) -> str:
        """The runtime's model loader: transformers (compressed-tensors checkpoints included) or onnx."""
        return "onnx" if self.export == "onnx" else "transformers"

    @property
    def scheme(self) -> Scheme | None:
        """The registered quantization scheme (quantize/schemes.py), or None."""
        return get_scheme(self.quantize)

    @property
    def streamed(self) -> bool:
        """True when the merge writes a compressed-tensors checkpoint in its own stream."""
        return self.scheme is not None and self.scheme.kind == "streamed"

    @property
    def onnx_quantized(self) -> bool:
        """True when the ONNX export is quantized by onnxruntime (an `onnx` scheme)."""
        return self.scheme is not None and self.scheme.kind == "onnx"

    @property
    def load_quantization(self) -> str:
        """A GPU quantization the runtime applies when it loads the model (runtime.json's name), or "none"."""
        scheme = self.scheme
        return scheme.runtime_name if scheme is not None and scheme.kind == "load-time" else "none"

    @property
    def transforms(self) -> bool:
        """True when packager writes a new artefact after the merge (an ONNX export)."""
        return self.backend != "transformers"

    @property
    def label(self) -> str:
        """The image label `io.packager.quantization`."""
        if self.export == "onnx":
            return f"onnx-{self.quantize}" if self.quantize != "none" else "onnx-fp32"
        return self.quantize


def artefact_spec(
    quantize: str = "none",
    export: str = "none",
    layout: str = "baked",
    granularity: str = "auto",
    onnx_atol: float = 1e-3,
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS,
    calibrate: str | None = None,
    max_kl: float = DEFAULT_MAX_KL,
    min_top1: float = DEFAULT_MIN_TOP1,
) -> ArtefactSpec:
    """The spec of these flags, validated (`check_artefact`)."""
    spec = ArtefactSpec(quantize, export, granularity, onnx_atol, max_accuracy_loss, calibrate, max_kl, min_top1)
    return check_artefact(spec, layout)


def check_artefact(spec: ArtefactSpec, layout: str = "baked") -> ArtefactSpec:
    """Validate every field of `spec` and their combination with `layout`; every refusal says what works
    instead. Returns the spec."""
    quantize, export, granularity, calibrate = spec.quantize, spec.export, spec.granularity, spec.calibrate
    kind = _check_quantize(quantize, export)
    _choice("--export", export, EXPORT_CHOICES)
    _choice("--onnx-granularity", granularity, GRANULARITIES)
    if export == "onnx" and kind not in ("none", "onnx"):
        raise UserInputError(
            f"--quantize {quantize} does not apply to ONNX (onnxruntime quantizes dynamically); use --export onnx "
            f"--quantize {' or '.join(names('onnx'))}, or drop --export onnx"
        )
    if layout == "shared" and export != "none":
        raise UserInputError(
            "the shared layout serves the base with adapters, so it cannot be exported; use --layout baked"
        )
    if granularity != "auto" and not (export == "onnx" and kind == "onnx"):
        raise UserInputError("--onnx-granularity applies to --export onnx --quantize int8 only; drop it")
    _check_limits(spec)
    if calibrate is not None and (kind != "streamed" or layout == "shared"):
        raise UserInputError(
            f"--calibrate runs GPTQ for --quantize {'|'.join(s.name for s in schemes('streamed') if s.calibrates)} "
            "in the baked layout (a merged model); pass one, or drop --calibrate"
        )
    return spec


def _check_limits(spec: ArtefactSpec) -> None:
    if not spec.onnx_atol > 0:
        raise UserInputError(f"--onnx-atol must be positive, got {spec.onnx_atol}")
    if not spec.max_accuracy_loss > 0:
        raise UserInputError(
            f"--max-accuracy-loss must be positive (0.1 = 10% higher perplexity), got {spec.max_accuracy_loss}"
        )
    if not spec.max_kl > 0 or not 0 <= spec.min_top1 <= 1:
        raise UserInputError(
            f"--max-kl must be positive and --min-top1 in [0, 1], got {spec.max_kl} and {spec.min_top1}"
        )


def _check_quantize(quantize: str, export: str) -> str:
    """The scheme's kind ("none" for none); an unknown name, or ONNX's int8 without --export onnx, refused."""
    scheme = get_scheme(quantize)
    if scheme is None:
        return "none"
    if scheme.kind == "onnx" and export != "onnx":
        if quantize in RENAMED:  # int8 named optimum-quanto's weights before it named ONNX's
            raise UserInputError(
                f"--quantize {quantize} (optimum-quanto) is gone: no serving engine loads it; use --quantize "
                f"{RENAMED[quantize]}: compressed-tensors checkpoints vLLM serves (int8 stays for --export onnx)"
            )
        raise UserInputError(f"--quantize {quantize} quantizes an ONNX export; add --export onnx")
    return scheme.kind


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"unknown {flag} {value!r}; use one of {', '.join(choices)}")


def load_time_note(spec: ArtefactSpec) -> list[str]:
    """What a load-time scheme means for whoever runs the image."""
    if spec.load_quantization == "none":
        return []
    return [
        f"{spec.load_quantization}: the weights are quantized by the runtime when it loads them, on a CUDA GPU "
        "(docker run --gpus all, with a base image that has bitsandbytes and CUDA); without a GPU the container "
        "exits with code 4"
    ]
