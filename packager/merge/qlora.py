"""QLoRA at merge time: base weights rounded through bitsandbytes' 4-bit format as training saw them
(--qlora-merge simulate-nf4), and the base loaded in 4-bit for the parity reference. What is QLoRA-trained and how
it merges is decided when the adapter is resolved (resolve/qlora.py)."""

from __future__ import annotations

import torch

from packager.errors import PackagerError
from packager.plan import QLoRASpec
from packager.tasks import ModelTask


def round_trip(tensor: torch.Tensor, how: str, spec: QLoRASpec) -> torch.Tensor:
    """The tensor as bitsandbytes stores and dequantizes it; Conv1D weights are quantized transposed, as
    transformers does, and returned in their stored layout."""
    if how.endswith("-transposed"):
        return nf4_round_trip(tensor.T, spec).T.contiguous()
    return nf4_round_trip(tensor, spec)


def nf4_round_trip(tensor: torch.Tensor, spec: QLoRASpec) -> torch.Tensor:
    """dequantize_4bit(quantize_4bit(t)) in the tensor's own dtype (training quantized from the loaded dtype)."""
    functional = bitsandbytes_functional()
    packed, state = functional.quantize_4bit(
        tensor.contiguous(),
        blocksize=spec.blocksize,
        compress_statistics=spec.double_quant,
        quant_type=spec.quant_type,
    )
    return functional.dequantize_4bit(packed, state)


def bitsandbytes_functional():
    """bitsandbytes.functional, imported on first use; a clear error when it is not installed."""
    try:
        import bitsandbytes.functional as functional
    except ImportError:
        raise PackagerError(
            "--qlora-merge simulate-nf4 rounds weights with bitsandbytes, which is not installed; "
            "run `pip install bitsandbytes` or use --qlora-merge w16"
        ) from None
    return functional


def load_4bit_base(path: str, dtype: torch.dtype, spec: QLoRASpec, task: ModelTask | None = None):
    """The base loaded in 4-bit on CPU in the task's class as training loaded it (fp32 compute), for the parity
    reference."""
    from transformers import BitsAndBytesConfig

    bitsandbytes_functional()
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quant_type,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=list(spec.skip_modules) if spec.skip_modules is not None else None,
    )
    model_class = (task or ModelTask()).model_class()
    model = model_class.from_pretrained(path, dtype=dtype, quantization_config=config, device_map="cpu")
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            # bitsandbytes' CPU inference kernel repacks the weights and computes in bf16; training's forward
            # (dequantize, then an fp32 matmul) is the one to reproduce
            module.support_avx512bf16_for_cpu = False
    return model
