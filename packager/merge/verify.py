"""Parity: the merged model must answer like base + adapter through PEFT (logits on fixed inputs)."""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass

import torch

from packager.errors import ParityError
from packager.merge.reference import compute_dtype, load_peft_model, reference_name, simulates_4bit, stored_dtype
from packager.resolve.resolver import Resolved

# Unmerged (x@W + x@A^T@B^T*s) and merged (x@(W+dW)) forwards differ by rounding only; relative to the
# largest logit, these bounds hold for correct merges and fail by orders of magnitude for wrong ones.
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}
DEFAULT_MAX_VERIFY_BYTES = 8 * 10**9


@dataclass(frozen=True)
class ParityReport:
    """The merged model's logits against the reference's: the largest difference, its limit, top-1 agreement."""

    dtype: str
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    top1_agreement: float
    passed: bool
    reference: str = "PEFT on the base as stored"

    def summary(self) -> str:
        """One line: ok or FAILED, the difference against its limit, top-1 agreement and the reference."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"parity {verdict}: max |logits diff| {self.max_abs_diff:.3g} (limit {self.tolerance:.3g}, "
            f"{self.dtype}), top-1 agreement {self.top1_agreement:.1%}; reference: {self.reference}"
        )


def fixed_inputs(vocab_size: int, batch: int = 2, length: int = 24) -> torch.Tensor:
    """Deterministic token ids covering the whole vocabulary range, including its last (maybe new) id."""
    generator = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    ids[0, -1] = vocab_size - 1
    return ids


def check_parity(resolved: Resolved, merged_dir: str) -> ParityReport:
    """Compare logits of PeftModel(base, adapter) with the merged model; raise ParityError past tolerance."""
    report = measure_parity(resolved, merged_dir)
    if not report.passed:
        raise ParityError(
            f"merged model does not match base + adapter: {report.summary()}; report this with the adapter config"
        )
    return report


def measure_parity(resolved: Resolved, merged_dir: str) -> ParityReport:
    """Compare logits of PEFT on base + adapter with the merged model on fixed inputs; a mismatch is reported,
    not raised (`check_parity` raises)."""
    dtype = compute_dtype(resolved)
    reference_model = load_peft_model(resolved, dtype)
    vocab = reference_model.get_input_embeddings().weight.shape[0]
    ids = fixed_inputs(vocab)
    reference = _logits(reference_model, ids)
    del reference_model
    gc.collect()
    merged = _logits(_load_merged(merged_dir, dtype), ids)
    diff = (reference - merged).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    tolerance = _relative_tolerance(resolved, dtype) * scale
    agreement = (reference.argmax(-1) == merged.argmax(-1)).float().mean().item()
    name = str(dtype).removeprefix("torch.")
    return ParityReport(name, diff, scale, tolerance, agreement, diff <= tolerance, reference_name(resolved))


def _relative_tolerance(resolved: Resolved, dtype: torch.dtype) -> float:
    """The merged dtype's bound; a 4-bit reference keeps its unquantized layers in the stored dtype, so the
    looser of the two applies."""
    dtypes = (dtype, stored_dtype(resolved)) if simulates_4bit(resolved) else (dtype,)
    return max(RELATIVE_TOLERANCE.get(d, 6e-2) for d in dtypes)


def _load_merged(path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


@torch.inference_mode()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits.float()
