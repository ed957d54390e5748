"""One weight at a time: blocks of rows compress to the same bytes as the whole weight, the layout the writer is
given beforehand is what the library produces, and the Quantizer passes through what it does not quantize."""

from __future__ import annotations

import pytest
import torch

import packager.quantize.tensors as tensors
from packager.io.writer import OutputTensor
from packager.quantize.plan import QuantizePlan

PRESETS = [("W8A8", None), ("W8A16", 128), ("W4A16", 64), ("FP8_DYNAMIC", None)]


def raw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(-1).view(torch.uint8)


@pytest.mark.parametrize(("preset", "group"), PRESETS)
def test_blocks_of_rows_compress_to_the_same_bytes_as_the_whole_weight(preset, group, monkeypatch) -> None:
    weight = (torch.randn(1000, 256, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    whole = tensors.compress_weight(weight, preset, group)
    monkeypatch.setattr(tensors, "ROWS_PER_CHUNK_BYTES", 100 * 256 * 2)  # blocks of 100 rows
    blocks = tensors.compress_weight(weight, preset, group)
    assert whole.keys() == blocks.keys() and all(torch.equal(raw(whole[k]), raw(blocks[k])) for k in whole)


@pytest.mark.parametrize(("preset", "group"), PRESETS)
def test_the_planned_layout_is_what_the_library_writes(preset, group) -> None:
    weight = torch.randn(96, 256).to(torch.bfloat16)
    made = tensors.compress_weight(weight, preset, group)
    planned = tensors.compressed_layout("BF16", (96, 256), preset, group)
    assert [(n, tuple(made[n].shape)) for n, *_ in planned] == [(n, s) for n, _d, s in planned]


def test_the_quantizer_passes_through_what_it_does_not_quantize(tmp_path) -> None:
    from safetensors.torch import save_file

    plan = QuantizePlan("w8a8", "W8A8", None, ("m.q.weight",), ("lm_head",))
    norm = tmp_path / "norm.safetensors"
    save_file({"tensor": torch.full((4,), 2.0)}, str(norm))
    quantizer = tensors.Quantizer(plan, {"m.norm.weight": str(norm)})  # a smoothed norm, from calibration
    layout = quantizer.layout([OutputTensor("m.q.weight", "F32", (4, 4)), OutputTensor("m.norm.weight", "F32", (4,))])
    assert [t.name for t in layout] == ["m.q.weight", "m.q.weight_scale", "m.norm.weight"]
    assert torch.equal(dict(quantizer.outputs("m.norm.weight", torch.ones(4)))["m.norm.weight"], torch.full((4,), 2.0))
    assert [n for n, _ in quantizer.outputs("m.q.weight", torch.ones(4, 4))] == ["m.q.weight", "m.q.weight_scale"]
    same = torch.arange(3.0)
    assert dict(tensors.Quantizer(None).outputs("x", same))["x"] is same
