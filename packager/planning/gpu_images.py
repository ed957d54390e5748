"""What a `--device cuda` image starts FROM when no `--base-image` is named: vLLM's own pinned release image for
the vLLM runtime, and PyTorch's pinned CUDA image plus packager's serving stack for packager's own server
(compressed-tensors for quantized checkpoints, onnxruntime-gpu for ONNX artefacts, bitsandbytes for load-time bnb
schemes).

Nothing here can be pulled on the machines that build packager: these images are rendered and checked with
hadolint and golden files, never run, in its tests.
"""

from __future__ import annotations

VLLM_GPU_IMAGE = "vllm/vllm-openai:v0.32.0"
# CUDA 13 and cuDNN 9: what onnxruntime-gpu 1.31's CUDA provider is built against
PYTORCH_GPU_IMAGE = "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"
SERVING_STACK = (
    "transformers==4.57.6",
    "peft==0.21.2",
    "safetensors==0.8.0",
    "tokenizers==0.22.2",
    "huggingface_hub==0.36.2",
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "pillow==13.0.0",
    "compressed-tensors==0.17.0",
)
BACKEND_STACK = {
    "transformers": (),
    "onnx": ("optimum==2.1.0", "optimum-onnx==0.1.0", "onnx==1.23.2", "onnxruntime-gpu==1.31.1"),
}


def gpu_base(engine: str, backend: str, scheme_requirements: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The CUDA base image and the pip requirements the Dockerfile installs on it (none for vLLM's image;
    `scheme_requirements`: what the quantization scheme needs, from its registry entry)."""
    if engine == "vllm":
        return VLLM_GPU_IMAGE, ()
    return PYTORCH_GPU_IMAGE, (*SERVING_STACK, *BACKEND_STACK[backend], *scheme_requirements)
