"""packager's compressed-tensors checkpoints, made as the merge streams and by `packager quantize`, are
llm-compressor's: `oneshot` with the matching QuantizationModifier scheme (round-to-nearest, no calibration) on the
unquantized merge gives the same tensors, bit for bit, the same quantization_config, and the same logits when
transformers loads either (issue 17). llm-compressor runs in its own venv (.venv-llmcompressor, `make test`
builds it): it pins torch<=2.11 and compressed-tensors 0.16 beside packager's 2.13 and 0.17."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from packager.artefact.make import make_artefact
from packager.artefact.spec import artefact_spec
from packager.merge.run import run_merge
from packager.quantize.plan import plan_folder_quantization
from packager.resolve.resolver import ResolveRequest
from tests import models

pytestmark = pytest.mark.slow

ORACLE = Path(__file__).resolve().parents[2] / ".venv-llmcompressor" / "bin" / "python"
SCRIPT = Path(__file__).with_name("llmcompressor_oneshot.py")
SCHEMES = {"w8a8": "W8A8", "w8a16": "W8A16", "w4a16": "W4A16", "fp8": "FP8_DYNAMIC"}
DIMS = {"vocab_size": 384, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 8, "max_position_embeddings": 128}  # fmt: skip
FAMILIES = {
    "llama": lambda: LlamaConfig(**DIMS, num_key_value_heads=4),  # head_dim 32, as vLLM's CPU kernels need
    "qwen2": lambda: Qwen2Config(**DIMS, num_key_value_heads=2),
    # hidden 192: not a multiple of 128, so w8a16/w4a16 fall back to groups of 64
    "llama-192": lambda: LlamaConfig(
        **{**DIMS, "hidden_size": 192, "intermediate_size": 384, "num_attention_heads": 6}
    ),
}


def oracle_python() -> str:
    assert ORACLE.exists(), f"{ORACLE} is missing: `make test` builds the llm-compressor venv (make oracle)"
    return str(ORACLE)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def quantized(request, tmp_path_factory) -> dict:
    """One family: its unquantized merge, packager's streamed checkpoints and llm-compressor's, per scheme."""
    root = tmp_path_factory.mktemp(request.param)
    base = models.save_base(FAMILIES[request.param](), str(root / "base"), dtype=torch.bfloat16)
    adapter = models.save_adapter(base, str(root / "adapter"), target_modules=["q_proj", "v_proj", "down_proj"])
    merged = str(root / "merged")
    run_merge(ResolveRequest(adapter), merged, verify=False, quiet=True)
    ours = {}
    for scheme in SCHEMES:
        ours[scheme] = str(root / f"stream-{scheme}")
        run_merge(ResolveRequest(adapter), ours[scheme], quantize=scheme, quiet=True)
    items = [_item(merged, scheme) for scheme in SCHEMES]
    subprocess.run(
        [oracle_python(), str(SCRIPT), merged, str(root / "oracle"), *items], check=True, capture_output=True
    )
    theirs = {
        scheme: str(root / "oracle" / item.replace(":", "-")) for scheme, item in zip(SCHEMES, items, strict=True)
    }
    return {"merged": merged, "ours": ours, "theirs": theirs, "root": root}


def _item(merged: str, scheme: str) -> str:
    plan = plan_folder_quantization(merged, scheme)
    return SCHEMES[scheme] + (f":{plan.group_size}" if plan.group_size not in (None, 128) else "")


def raw(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so fp8 (which torch.equal does not compare) compares too."""
    return tensor.contiguous().view(-1).view(torch.uint8)


def assert_same_checkpoint(ours: str, theirs: str) -> None:
    mine, oracle = load_file(f"{ours}/model.safetensors"), load_file(f"{theirs}/model.safetensors")
    assert mine.keys() == oracle.keys(), set(mine) ^ set(oracle)
    for name, tensor in oracle.items():
        assert mine[name].dtype == tensor.dtype and mine[name].shape == tensor.shape, name
        assert torch.equal(raw(mine[name]), raw(tensor)), f"{name} differs"
    config = {}
    for folder in (ours, theirs):
        with open(os.path.join(folder, "config.json")) as f:
            config[folder] = json.load(f)["quantization_config"]
            config[folder].pop("version")  # 0.17.0 (packager, vLLM 0.32) against 0.16.0 (llm-compressor 0.11)
    assert config[ours] == config[theirs]


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_the_streamed_checkpoint_is_llm_compressors(quantized, scheme) -> None:
    assert_same_checkpoint(quantized["ours"][scheme], quantized["theirs"][scheme])


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_both_load_to_the_same_logits_in_transformers(quantized, scheme) -> None:
    ids = torch.randint(0, DIMS["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    logits = []
    for folder in (quantized["ours"][scheme], quantized["theirs"][scheme]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        logits.append(model(input_ids=ids).logits)
    assert torch.equal(logits[0], logits[1])


def test_packager_quantize_on_the_merged_folder_writes_the_same(quantized) -> None:
    output = str(quantized["root"] / "quantize-w4a16")
    spec = artefact_spec("w4a16")
    report = make_artefact(quantized["merged"], spec, output, False, lambda _line: None)
    assert_same_checkpoint(output, quantized["theirs"]["w4a16"])
    assert report.accuracy is not None and report.size_ratio < 0.6
