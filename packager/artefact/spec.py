"""What the image serves, decided from the flags before any work: the merged model as is, weight-only
quantized (optimum-quanto), exported to ONNX (optionally int8), or quantized by the runtime at load (GPU).

`ArtefactSpec` is pure and frozen; `quantize.py` and `onnx_export.py` produce the artefacts, and the report of
each (`ArtefactReport`) travels into the package summary, the JSON report and an image label.
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

from packager.errors import UserInputError
from packager.runtime.config import LOAD_QUANTIZATIONS

if TYPE_CHECKING:
    from packager.artefact.accuracy import AccuracyReport

STORED = ("int8", "int4")  # weights written quantized into the image
# quantized by the runtime at load time, on a CUDA GPU: the runtime's own vocabulary, so the two cannot drift
LOAD_TIME = tuple(q for q in LOAD_QUANTIZATIONS if q != "none")
QUANTIZE_CHOICES = ("none", *STORED, *LOAD_TIME)
EXPORT_CHOICES = ("none", "onnx")
GRANULARITIES = ("auto", "per-channel", "per-tensor")
ARTEFACT_REPORT = "packager.artefact.json"


@dataclass(frozen=True)
class ArtefactSpec:
    """What becomes of the merged model, from --quantize and --export (validated by `artefact_spec`)."""

    quantize: str = "none"
    export: str = "none"
    granularity: str = "auto"  # ONNX int8 only: per-channel or per-tensor scales, auto = measure both
    onnx_atol: float = 1e-3  # max |logits diff| of the fp32 ONNX model vs PyTorch before it is refused

    @property
    def backend(self) -> str:
        """The runtime's model loader: transformers, quanto (stored int8/int4) or onnx (onnxruntime)."""
        if self.export == "onnx":
            return "onnx"
        return "quanto" if self.quantize in STORED else "transformers"

    @property
    def load_quantization(self) -> str:
        """A GPU quantization the runtime applies when it loads the model, or "none"."""
        return self.quantize if self.quantize in LOAD_TIME else "none"

    @property
    def transforms(self) -> bool:
        """True when packager writes a new artefact after the merge."""
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
) -> ArtefactSpec:
    """Validate a combination of flags; every refusal says what works instead."""
    _choice("--quantize", quantize, QUANTIZE_CHOICES)
    _choice("--export", export, EXPORT_CHOICES)
    _choice("--onnx-granularity", granularity, GRANULARITIES)
    if export == "onnx" and quantize == "int4":
        raise UserInputError(
            "--quantize int4 with --export onnx is not supported (onnxruntime dynamic quantization is int8); "
            "use --quantize int8 with ONNX, or int4 without --export"
        )
    if export == "onnx" and quantize in LOAD_TIME:
        raise UserInputError(
            f"--quantize {quantize} is applied by the PyTorch runtime at load time, not to ONNX; "
            "drop --export onnx, or use --quantize int8 for an int8 ONNX model"
        )
    if layout == "shared" and (quantize in STORED or export != "none"):
        raise UserInputError(
            "the shared layout serves the unmodified base with adapters, so it cannot be stored quantized or "
            "exported; use --layout baked (load-time --quantize bnb-nf4|bnb-int8|fp8 works with both layouts)"
        )
    if granularity != "auto" and not (export == "onnx" and quantize == "int8"):
        raise UserInputError("--onnx-granularity applies to --export onnx --quantize int8 only; drop it")
    if not onnx_atol > 0:
        raise UserInputError(f"--onnx-atol must be positive, got {onnx_atol}")
    return ArtefactSpec(quantize, export, granularity, onnx_atol)


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"unknown {flag} {value!r}; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class ArtefactReport:
    """One quantized or exported artefact, measured against the unquantized merge it came from."""

    kind: str  # e.g. quanto-int8, onnx-fp32, onnx-int8
    path: str
    size_bytes: int
    reference_size_bytes: int
    seconds: float
    accuracy: AccuracyReport
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        """The artefact's size over the unquantized merge's."""
        return self.size_bytes / self.reference_size_bytes

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with size_ratio and the accuracy figures."""
        data = dataclasses.asdict(self)
        data["size_ratio"] = round(self.size_ratio, 4)
        data["accuracy"] = self.accuracy.to_dict()
        return data

    def summary(self) -> str:
        """One line for people: kind, size, ratio to the merge, and accuracy."""
        return (
            f"{self.kind}: {self.size_bytes / 1e6:.1f} MB ({self.size_ratio:.2f}x the merge), {self.accuracy.summary()}"
        )

    def label(self) -> str:
        """Compact JSON for the image label `io.packager.accuracy`."""
        acc = self.accuracy
        figures = {
            "kind": self.kind,
            "size_ratio": round(self.size_ratio, 4),
            "max_abs_logit_diff": _round(acc.max_abs_logit_diff),
            "mean_abs_logit_diff": _round(acc.mean_abs_logit_diff),
            "top1": round(acc.top1_agreement, 4),
            "greedy": round(acc.greedy_token_agreement, 4),
            "ppl_change": round(acc.perplexity_change, 5),
        }
        return json.dumps(figures, separators=(",", ":"), sort_keys=True)


def _round(value: float) -> float:
    return float(f"{value:.4g}")


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
