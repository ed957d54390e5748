"""What the image serves, decided from the flags before any work: the merged model as is, quantized into a
compressed-tensors checkpoint in the merge's own stream (w8a8, w8a16, w4a16, fp8: what vLLM loads), exported to
ONNX (optionally int8), or quantized by the runtime at load (GPU).

`ArtefactSpec` is pure and frozen; the merge stream writes the compressed-tensors checkpoints and
`onnx_export.py` the ONNX artefacts; the report of each (`ArtefactReport`) travels into the package summary, the
JSON report and an image label.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from packager.artefact.schemes import SCHEMES
from packager.errors import UserInputError

if TYPE_CHECKING:
    from packager.artefact.accuracy import AccuracyReport, EncoderAccuracy

STREAMED = tuple(SCHEMES)  # compressed-tensors checkpoints, quantized as the merge writes them
ONNX_INT8 = "int8"  # onnxruntime's dynamic int8 quantization of an ONNX export
# quantized by the runtime at load time, on a CUDA GPU: flag -> runtime.json's load_quantization
LOAD_TIME = {"bnb-nf4": "bnb-nf4", "bnb-int8": "bnb-int8", "fp8-load": "fp8"}
# bytes per Linear weight each load-time scheme holds on the GPU (nf4: 4 bits and an fp32 absmax per 64)
LOAD_TIME_BYTES = {"bnb-nf4": 0.5 + 4 / 64, "bnb-int8": 1.0, "fp8": 1.0}
QUANTIZE_CHOICES = ("none", *STREAMED, ONNX_INT8, *LOAD_TIME)
# the names of packager before compressed-tensors (optimum-quanto artefacts no engine loads): what to use now
RENAMED = {
    "int8": "w8a16 (int8 weights) or w8a8 (int8 weights and activations)",
    "int4": "w4a16 (int4 weights)",
}
EXPORT_CHOICES = ("none", "onnx")
GRANULARITIES = ("auto", "per-channel", "per-tensor")
ARTEFACT_REPORT = "packager.artefact.json"
DEFAULT_MAX_ACCURACY_LOSS = 0.10  # the perplexity increase (relative) an artefact may cost before it is refused
# the next-token distributions may drift this far (mean KL, nats) before a quantized model is refused, and the
# positions where the reference is sure of its next token (p >= 0.5) must keep that token this often: on
# SmolLM2-135M's real weights w8a16, w8a8 and fp8 pass both (KL <= 0.036, top-1 >= 84% on every position),
# round-to-nearest w4a16 fails both (KL 0.45, top-1 56%; bench/RESULTS.md)
DEFAULT_MAX_KL = 0.10
DEFAULT_MIN_TOP1 = 0.75


@dataclass(frozen=True)
class AccuracyGate:
    """The figures a quantized model must meet against its reference: relative perplexity rise, KL divergence
    of the next-token distributions, and top-1 agreement where the reference is confident."""

    perplexity: float = DEFAULT_MAX_ACCURACY_LOSS
    kl: float = DEFAULT_MAX_KL
    top1: float = DEFAULT_MIN_TOP1

    def describe(self) -> str:
        """The limits in words."""
        return (
            f"perplexity at most +{self.perplexity:.0%}, KL at most {self.kl:g} nats, top-1 kept on at least "
            f"{self.top1:.0%} of the confident positions"
        )


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
    def streamed(self) -> bool:
        """True when the merge writes a compressed-tensors checkpoint in its own stream."""
        return self.quantize in STREAMED

    @property
    def load_quantization(self) -> str:
        """A GPU quantization the runtime applies when it loads the model (runtime.json's name), or "none"."""
        return LOAD_TIME.get(self.quantize, "none")

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
    """Validate a combination of flags; every refusal says what works instead."""
    _check_quantize(quantize, export)
    _choice("--export", export, EXPORT_CHOICES)
    _choice("--onnx-granularity", granularity, GRANULARITIES)
    if export == "onnx" and quantize not in ("none", ONNX_INT8):
        raise UserInputError(
            f"--quantize {quantize} does not apply to ONNX (onnxruntime quantizes dynamically to int8); "
            "use --export onnx --quantize int8, or drop --export onnx"
        )
    if layout == "shared" and export != "none":
        raise UserInputError(
            "the shared layout serves the base with adapters, so it cannot be exported; use --layout baked"
        )
    if granularity != "auto" and not (export == "onnx" and quantize == ONNX_INT8):
        raise UserInputError("--onnx-granularity applies to --export onnx --quantize int8 only; drop it")
    if not onnx_atol > 0:
        raise UserInputError(f"--onnx-atol must be positive, got {onnx_atol}")
    if not max_accuracy_loss > 0:
        raise UserInputError(
            f"--max-accuracy-loss must be positive (0.1 = 10% higher perplexity), got {max_accuracy_loss}"
        )
    if not max_kl > 0 or not 0 <= min_top1 <= 1:
        raise UserInputError(f"--max-kl must be positive and --min-top1 in [0, 1], got {max_kl} and {min_top1}")
    if calibrate is not None and (quantize not in STREAMED or layout == "shared"):
        raise UserInputError(
            "--calibrate runs GPTQ for --quantize w4a16|w8a16|w8a8 in the baked layout (a merged model); pass one, "
            "or drop --calibrate"
        )
    return ArtefactSpec(quantize, export, granularity, onnx_atol, max_accuracy_loss, calibrate, max_kl, min_top1)


def _check_quantize(quantize: str, export: str) -> None:
    if quantize in RENAMED and not (quantize == ONNX_INT8 and export == "onnx"):
        raise UserInputError(
            f"--quantize {quantize} (optimum-quanto) is gone: no serving engine loads it; use --quantize "
            f"{RENAMED[quantize]}: compressed-tensors checkpoints vLLM serves (int8 stays for --export onnx)"
        )
    if quantize not in QUANTIZE_CHOICES:
        raise UserInputError(
            f"unknown --quantize {quantize!r}; use none, a compressed-tensors scheme ({', '.join(STREAMED)}), "
            f"{ONNX_INT8} with --export onnx, or a scheme the runtime applies on a CUDA GPU ({', '.join(LOAD_TIME)})"
        )


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"unknown {flag} {value!r}; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class ArtefactReport:
    """One quantized or exported artefact, measured against the unquantized merge it came from."""

    kind: str  # e.g. compressed-tensors-w8a8, onnx-fp32, onnx-int8
    path: str
    size_bytes: int
    reference_size_bytes: int
    seconds: float
    accuracy: AccuracyReport | EncoderAccuracy | None  # None: not measured (--no-verify)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        """The artefact's size over the unquantized merge's."""
        return self.size_bytes / self.reference_size_bytes

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with size_ratio and the accuracy figures."""
        data = dataclasses.asdict(self)
        data["size_ratio"] = round(self.size_ratio, 4)
        data["accuracy"] = self.accuracy.to_dict() if self.accuracy else None
        return data

    def summary(self) -> str:
        """One line for people: kind, size, ratio to the merge, and accuracy."""
        accuracy = self.accuracy.summary() if self.accuracy else "accuracy not measured (--no-verify)"
        return f"{self.kind}: {self.size_bytes / 1e6:.1f} MB ({self.size_ratio:.2f}x the merge), {accuracy}"

    def label(self) -> str:
        """Compact JSON for the image label `io.packager.accuracy`."""
        figures: dict[str, Any] = {"kind": self.kind, "size_ratio": round(self.size_ratio, 4)}
        figures |= self.accuracy.figures() if self.accuracy else {}
        return json.dumps(figures, separators=(",", ":"), sort_keys=True)


def write_artefact_report(report: ArtefactReport, folder: str) -> None:
    """Write the report into `folder` as packager.artefact.json."""
    with open(os.path.join(folder, ARTEFACT_REPORT), "w") as f:
        json.dump(report.to_dict(), f, indent=2, sort_keys=True)
        f.write("\n")


def load_time_note(spec: ArtefactSpec) -> list[str]:
    """What a load-time scheme means for whoever runs the image."""
    if spec.load_quantization == "none":
        return []
    return [
        f"{spec.load_quantization}: the weights are quantized by the runtime when it loads them, on a CUDA GPU "
        "(docker run --gpus all, with a base image that has bitsandbytes and CUDA); without a GPU the container "
        "exits with code 4"
    ]


class Phases:
    """Times named steps of one job and says what is happening ("export: validating ...")."""

    def __init__(self, step: str, log: Callable[[str], None]) -> None:
        self.step, self.log = step, log
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, message: str) -> Iterator[None]:
        self.log(f"{self.step}: {message} ...")
        started = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - started, 3)

    @property
    def total(self) -> float:
        """Seconds spent in all the steps timed so far."""
        return sum(self.seconds.values())


def folder_size(folder: str, suffixes: tuple[str, ...]) -> int:
    """Bytes of the weight files in `folder` (what quantization shrinks)."""
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(suffixes))
