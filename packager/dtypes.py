"""The one dtype vocabulary: what `--dtype` accepts, the safetensors name each means, and the name a model's
config.json uses. Torch-free, so the CLI can check flags before importing torch; the safetensors -> torch table
lives beside the safetensors reader (io/safetensors_format.py)."""

from __future__ import annotations

CLI_CHOICES = ("auto", "bf16", "fp16", "fp32")  # "auto": keep each tensor's stored dtype
SAFETENSORS_NAME = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
CONFIG_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
FLOAT = frozenset(CONFIG_NAME)  # the stored dtypes a --dtype conversion applies to
DTYPE_OF_CONFIG = {name: stored for stored, name in CONFIG_NAME.items()}
