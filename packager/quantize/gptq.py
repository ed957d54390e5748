"""GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize a Linear weight one input column at a time, spreading each column's rounding error over
the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs (H = 2 X^T X / n).

As llm-compressor's GPTQModifier runs it: columns in activation order (the largest diagonal of H first; the format
and group indices stay those of the original order), blocks of 128 columns updated lazily, a fraction of the mean
diagonal added to H, H^-1 through Cholesky factors, dead inputs (a zero diagonal) zeroed. Scales and zero points
come from the original weight, as for round-to-nearest; each column is quantized by compressed-tensors' own
`fake_quantize`. tests/quantize/test_gptq.py holds the result equal to llm-compressor's `quantize_weight`.

One default differs: the dampening. llm-compressor's 1% assumes its calibration set (512 samples of 2048 tokens);
packager calibrates on a text of a few thousand tokens, where H of a 1536-wide input is barely determined and 1%
fits the text, not the model. Measured on SmolLM2-135M, w4a16 in groups of 64, 2.5k tokens (bench/RESULTS.md):
KL to the fp32 model 0.251 at 1%, 0.22 at 5%, 0.199 at 10%, 0.188 at 20% and at 40%; 20% is the default.
"""

from __future__ import annotations

import torch

BLOCK = 128
DAMPENING = 0.2  # of H's mean diagonal (llm-compressor: 0.01, for a calibration set some 400x larger)


def inverse_hessian(hessian: torch.Tensor, dampening: float = DAMPENING) -> torch.Tensor:
    """The upper Cholesky factor of (H + damp*I)^-1, damp a fraction of H's mean diagonal; the identity (so
    round-to-nearest) where H is singular even so."""
    h = hessian.clone()
    diagonal = torch.arange(h.shape[0])
    h[diagonal, diagonal] += dampening * torch.mean(torch.diag(h))
    try:
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError:
        return torch.eye(h.shape[0], dtype=h.dtype)


def gptq_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    args,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    dampening: float = DAMPENING,
) -> torch.Tensor:
    """`weight` (out, in) quantized by GPTQ against `hessian` (in, in), returned dequantized (each value on the
    grid of `scale` and `zero_point`, the per-channel or per-group parameters of `args`), in fp32. One torch
    thread: the column loop's small operations run 1.7x slower on two (2048 x 2048: 1.4 s against 2.4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq(weight, hessian, args, scale, zero_point, dampening)
    finally:
        torch.set_num_threads(threads)


def _gptq(weight, hessian, args, scale, zero_point, dampening) -> torch.Tensor:
    w = weight.float().clone()
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = torch.argsort(torch.diag(h), descending=True)  # activation order
    w, h = w[:, order], h[order][:, order]
    groups = _groups(args, w.shape[1])[order]
    hinv = inverse_hessian(h, dampening)
    quantized = torch.zeros_like(w)
    for start in range(0, w.shape[1], BLOCK):
        end = min(start + BLOCK, w.shape[1])
        errors = _quantize_block(w, hinv, quantized, start, end, groups, args, scale, zero_point)
        w[:, end:] -= errors @ hinv[start:end, end:]
    return quantized[:, torch.argsort(order)]


def _quantize_block(w, hinv, quantized, start, end, groups, args, scale, zero_point) -> torch.Tensor:
    """Columns start..end, each quantized, its scaled error spread over the block's later columns; the block's
    errors are returned for the columns after it."""
    block, block_hinv = w[:, start:end].clone(), hinv[start:end, start:end]
    errors = torch.zeros_like(block)
    grid = _Grid(args, scale, zero_point)
    for i in range(end - start):
        column = block[:, i]
        q = grid.fake_quantize(column, int(groups[start + i]))
        quantized[:, start + i] = q
        error = (column - q) / block_hinv[i, i]
        block[:, i:] -= error.unsqueeze(1) @ block_hinv[i, i:].unsqueeze(0)
        errors[:, i] = error
    return errors


class _Grid:
    """compressed-tensors' `fake_quantize` of one column on an integer grid, as its `_quantize_dequantize` computes
    it (divide by the scale, add the zero point, clamp, round; back to the scale's dtype, less the zero point, times
    the scale), without its per-call dispatch: GPTQ calls it once per input column. tests/quantize/test_gptq.py
    holds the result equal to llm-compressor's, which calls the library itself."""

    def __init__(self, args, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        if args.type != "int":
            raise ValueError("GPTQ here quantizes to integer grids")
        self.low, self.high = -(2 ** (args.num_bits - 1)), 2 ** (args.num_bits - 1) - 1
        self.scale, self.zero_point = scale, zero_point

    def fake_quantize(self, column: torch.Tensor, group: int) -> torch.Tensor:
        """One column rounded onto its group's grid and back (compressed-tensors' arithmetic, without its dispatch)."""
        scale, zero = self.scale[:, group], self.zero_point[:, group]
        scaled = column / scale + zero.to(column.dtype)
        quantized = torch.round(torch.clamp(scaled, self.low, self.high))
        return ((quantized.to(scale.dtype) - zero.to(scale.dtype)) * scale).to(column.dtype)


def _groups(args, columns: int) -> torch.Tensor:
    """Each input column's scale column: its group, or 0 for one scale per output channel."""
    if args.strategy == "group":
        return torch.arange(columns) // args.group_size
    return torch.zeros(columns, dtype=torch.long)
