"""The report of a made artefact (a quantized checkpoint, an ONNX export): what it is, where, its size against
the model it came from, how long it took and how far it moved; it travels into the package summary, the JSON
report, the lock and an image label."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI builds its parser without torch, which the figures' module imports
    from packager.accuracy.logits import AccuracyReport, EncoderAccuracy

ARTEFACT_REPORT = "packager.artefact.json"


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
