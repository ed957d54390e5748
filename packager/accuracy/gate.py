"""What a quantized or exported model must keep against its reference (perplexity, KL divergence, top-1 where
the reference is confident), and the one-line refusal that names the figure that missed and the way out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packager.errors import ValidationError

if TYPE_CHECKING:
    from packager.accuracy.logits import AccuracyReport

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


def check_accuracy(report: AccuracyReport, gate: AccuracyGate, what: str, hint: str) -> None:
    """Refuse an artefact past any limit of `gate`, naming the figure that refused it and the way out."""
    refusal = failed_figure(report, gate)
    if refusal is not None:
        figure, flag, accept = refusal
        raise ValidationError(
            f"{what} {figure} from {flag}); nothing was written; {hint}, or pass {flag} {accept} to accept it"
        )


def failed_figure(report: AccuracyReport, gate: AccuracyGate) -> tuple[str, str, str] | None:
    """(the figure, its flag, the value that would accept it) for the first limit missed, else None."""
    if report.perplexity_change > gate.perplexity:
        change = report.perplexity_change
        figure = (
            f"raised perplexity on the shipped text by {change:.1%} ({report.perplexity_reference:.3f} -> "
            f"{report.perplexity_candidate:.3f}; limit {gate.perplexity:.1%}"
        )
        return figure, "--max-accuracy-loss", f"{math.ceil(change * 100 + 1) / 100:g}"
    if report.kl_divergence > gate.kl:
        figure = f"moved the next-token distributions by KL {report.kl_divergence:.3g} nats (limit {gate.kl:g}"
        return figure, "--max-kl", f"{math.ceil(report.kl_divergence * 100 + 1) / 100:g}"
    kept = report.confident_top1
    if kept is not None and kept < gate.top1:
        figure = (
            f"kept the reference's confident next token on {kept:.1%} of {report.confident_positions} positions "
            f"(limit {gate.top1:.0%}"
        )
        return figure, "--min-top1", f"{max(0.0, math.floor(kept * 100 - 1) / 100):g}"
    return None
