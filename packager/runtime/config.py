"""runtime.json: what the image serves and how; written by packager at package time, read at start-up.

Schema (a JSON object; unknown keys are rejected; relative paths are taken from the file's folder):

    layout       "baked" | "shared"                         required
    port         int, 1-65535, default 8000                 env PORT overrides (in server.main)
    load_quantization  "none" | "bnb-nf4" | "bnb-int8" | "fp8", default "none": quantized by the runtime
                 at load time; needs a CUDA GPU (the server refuses to start without one)
    baked:
      model_dir    str, the merged model folder             required
      served_name  str, the name /v1/models lists           required
      backend      "transformers" | "onnx", default "transformers": how model_dir is loaded
      adapter_dir  str, optional: a PEFT adapter served unmerged on model_dir (prompt, prefix or P-tuning)
    shared:
      base_dir     str, where the base is mounted (read-only), default "/base"    env PACKAGER_BASE_DIR overrides
      adapters     {name: PEFT adapter folder}, non-empty   required
      lock         str, the packager lock with the base files   required unless verify_base is "off"
      verify_base  "quick" | "full" | "off", default "quick"    env PACKAGER_VERIFY_BASE overrides
    adapter_library  "peft" | "adapters", default "peft": the library that loads unmerged adapters (`adapters`:
                 AdapterHub's bottleneck, prefix and prompt tuning, prediction heads; packager engine only)
    engine       "packager" (this package's server) | "vllm", default "packager"
    batching     with engine packager: {"max_batch_size", "max_batch_tokens", "max_queue"}, positive integers
                 (defaults 32, 16384, 256): rows per forward pass, their prompt plus completion tokens, requests
                 waiting for a place (beyond it: HTTP 429)
    vllm         with engine vllm: {"dtype", "max_model_len", "base_name" (shared: the name the base answers
                 to), "max_lora_rank", "max_loras", "device" ("cpu" | "cuda"),
                 "quantization", "pooling" (embeddings and classifiers: vLLM's pooling runner, its
                 --pooler-config: {"task": "embed" | "classify", "seq_pooling_type", "use_activation"})};
                 started by vllm_launch.py

Example: {"layout": "shared", "port": 8000, "base_dir": "/base", "adapters": {"support": "/adapters/support"},
          "lock": "/opt/packager/packager.lock.json", "verify_base": "quick"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .batch_limits import BatchLimits, parse_batching
from .config_errors import ConfigError
from .vllm_config import VLLM_KEYS, VLLM_POOLING_TASKS, VllmSettings, check_vllm

VERIFY_MODES = ("quick", "full", "off")
BACKENDS = ("transformers", "onnx")
LOAD_QUANTIZATIONS = ("none", "bnb-nf4", "bnb-int8", "fp8")
ENGINES = ("packager", "vllm")
# what each task's model answers on (the class comes from the plan's task table, written into runtime.json)
SERVED_TASKS = {
    "CAUSAL_LM": "generate",
    "SEQ_2_SEQ_LM": "generate",
    "IMAGE_TEXT_TO_TEXT": "generate",  # chat with images
    "FEATURE_EXTRACTION": "embed",
    "SEQ_CLS": "classify",
    "TOKEN_CLS": "classify",
}
MODEL_CLASS = re.compile(r"^Auto[A-Za-z0-9]+$")
VERIFY_ENV = "PACKAGER_VERIFY_BASE"
BASE_DIR_ENV = "PACKAGER_BASE_DIR"  # where a platform puts the base instead (KServe: /mnt/models)
COMMON_KEYS = {
    "layout",
    "port",
    "load_quantization",
    "engine",
    "vllm",
    "batching",
    "task",
    "model_class",
    "adapter_library",
}
ADAPTER_LIBRARIES = ("peft", "adapters")
LAYOUT_KEYS = {
    "baked": {"model_dir", "served_name", "backend", "adapter_dir"},
    "shared": {"base_dir", "adapters", "lock", "verify_base"},
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


@dataclass(frozen=True)
class RuntimeConfig:
    """A validated runtime.json; `adapters` is ((name, folder), ...) in file order."""

    layout: str
    port: int = 8000
    model_dir: str | None = None
    served_name: str | None = None
    base_dir: str = "/base"
    adapters: tuple[tuple[str, str], ...] = ()
    lock: str | None = None
    verify_base: str = "quick"
    backend: str = "transformers"
    load_quantization: str = "none"
    engine: str = "packager"
    vllm: VllmSettings = dataclasses.field(default_factory=VllmSettings)
    task: str = "CAUSAL_LM"  # one of SERVED_TASKS
    model_class: str = "AutoModelForCausalLM"  # the transformers Auto class the model loads in
    adapter_dir: str | None = None  # baked: an adapter served unmerged on model_dir (nothing to merge)
    adapter_library: str = "peft"  # what loads unmerged adapters: peft, or adapters (AdapterHub)
    batching: BatchLimits | None = None  # packager engine: None keeps the server's defaults

    @property
    def serves(self) -> str:
        """What the model answers: generate (completions, chat), embed (/v1/embeddings) or classify (/classify)."""
        return SERVED_TASKS[self.task]

    @property
    def model_names(self) -> list[str]:
        """The names clients pass as `model`."""
        return [self.served_name or ""] if self.layout == "baked" else [name for name, _ in self.adapters]

    def to_json(self) -> dict[str, Any]:
        """The runtime.json object for this config (only the keys of its layout)."""
        data: dict[str, Any] = {"layout": self.layout, "port": self.port, "load_quantization": self.load_quantization}
        if self.engine == "vllm":  # only then, so packager-engine configs keep their shape
            data.update(engine="vllm", vllm=self.vllm.to_json())
        if self.task != "CAUSAL_LM":  # likewise for causal LMs
            data.update(task=self.task, model_class=self.model_class)
        if self.adapter_library != "peft":
            data.update(adapter_library=self.adapter_library)
        if self.batching is not None:
            data.update(batching=self.batching.to_json())
        if self.layout == "baked":
            data.update(model_dir=self.model_dir, served_name=self.served_name, backend=self.backend)
            return {**data, "adapter_dir": self.adapter_dir} if self.adapter_dir else data
        data.update(base_dir=self.base_dir, adapters=dict(self.adapters), verify_base=self.verify_base)
        return {**data, "lock": self.lock} if self.lock else data


def load_config(path: str, env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Read and validate runtime.json; PACKAGER_VERIFY_BASE and PACKAGER_BASE_DIR in `env` (default os.environ)
    override verify_base and base_dir."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"runtime config {path} not found; pass --config with the image's runtime.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read runtime config {path}: {exc}") from None
    return parse_config(data, os.path.dirname(os.path.abspath(path)), os.environ if env is None else env)


def parse_config(data: Any, root: str = ".", env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Validate a runtime.json object; relative paths are joined to `root`."""
    if not isinstance(data, dict):
        raise ConfigError("runtime config must be a JSON object")
    layout = data.get("layout")
    if layout not in LAYOUT_KEYS:
        raise ConfigError(f"runtime config: layout must be 'baked' or 'shared', got {layout!r}")
    unknown = sorted(set(data) - COMMON_KEYS - LAYOUT_KEYS[layout])
    if unknown:
        raise ConfigError(f"runtime config: unknown key(s) for layout {layout}: {', '.join(unknown)}")
    port = _port(data.get("port", 8000))
    load_quantization = _one_of(data, "load_quantization", LOAD_QUANTIZATIONS, "none")
    engine = parse_engine(data)
    config = _layout_config(data, layout, port, load_quantization, root, env)
    return dataclasses.replace(config, **engine, **_task(data), adapter_library=_adapter_library(data, engine))


def _adapter_library(data: dict, engine: dict[str, Any]) -> str:
    library = _one_of(data, "adapter_library", ADAPTER_LIBRARIES, "peft")
    if library == "adapters" and ("vllm" in engine or data.get("backend", "transformers") != "transformers"):
        raise ConfigError(
            "runtime config: adapter_library adapters needs the packager engine and the transformers backend"
        )
    unmerged = data["layout"] == "shared" or "adapter_dir" in data
    if library == "adapters" and not unmerged:
        raise ConfigError("runtime config: adapter_library adapters needs adapters (shared) or an adapter_dir (baked)")
    return library


def _task(data: dict) -> dict[str, str]:
    task = _one_of(data, "task", tuple(SERVED_TASKS), "CAUSAL_LM")
    model_class = data.get("model_class", "AutoModelForCausalLM")
    if not isinstance(model_class, str) or not MODEL_CLASS.match(model_class):
        raise ConfigError(f"runtime config: model_class must name a transformers Auto class, got {model_class!r}")
    pooled = task in VLLM_POOLING_TASKS and isinstance(data.get("vllm"), dict) and "pooling" in data["vllm"]
    if task != "CAUSAL_LM" and data.get("engine", "packager") != "packager" and not pooled:
        raise ConfigError(
            f"runtime config: task {task} is served by the packager engine (vLLM: causal LMs, and with vllm.pooling "
            f"{', '.join(VLLM_POOLING_TASKS)})"
        )
    return {"task": task, "model_class": model_class}


def parse_engine(data: dict) -> dict[str, Any]:
    """The engine and, for vLLM, its validated settings."""
    engine = _one_of(data, "engine", ENGINES, "packager")
    if engine == "packager":
        if "vllm" in data:
            raise ConfigError("runtime config: `vllm` settings need engine vllm")
        return {"batching": parse_batching(data["batching"])} if "batching" in data else {}
    if "batching" in data:
        raise ConfigError("runtime config: `batching` is for the packager engine; vLLM batches by its own settings")
    settings = data.get("vllm")
    if not isinstance(settings, dict) or set(settings) - VLLM_KEYS:
        raise ConfigError(f"runtime config: vllm must be an object with keys among {', '.join(sorted(VLLM_KEYS))}")
    vllm = VllmSettings(**settings)
    check_vllm(vllm)
    return {"engine": "vllm", "vllm": dataclasses.replace(vllm, base_name=_name(vllm.base_name))}


def _layout_config(data: dict, layout: str, port: int, load_quantization: str, root: str, env) -> RuntimeConfig:
    if layout == "baked":
        backend = _one_of(data, "backend", BACKENDS, "transformers")
        if backend == "onnx" and (load_quantization != "none" or "adapter_dir" in data):
            raise ConfigError("runtime config: load_quantization and adapter_dir are for the PyTorch backend, not onnx")
        return RuntimeConfig(
            "baked",
            port,
            model_dir=_path(data, "model_dir", root),
            served_name=_name(data.get("served_name")),
            backend=backend,
            load_quantization=load_quantization,
            adapter_dir=_path(data, "adapter_dir", root) if "adapter_dir" in data else None,
        )
    return dataclasses.replace(_shared(data, port, root, env or {}), load_quantization=load_quantization)


def _one_of(data: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ConfigError(f"runtime config: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _shared(data: dict, port: int, root: str, env: Mapping[str, str]) -> RuntimeConfig:
    adapters = data.get("adapters")
    if not isinstance(adapters, dict) or not adapters:
        raise ConfigError("runtime config: adapters must be a non-empty object {name: folder}")
    pairs = tuple((_name(name), _join(root, folder, f"adapters.{name}")) for name, folder in adapters.items())
    verify = env.get(VERIFY_ENV) or data.get("verify_base", "quick")
    if verify not in VERIFY_MODES:
        raise ConfigError(f"verify_base must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    lock = _path(data, "lock", root) if data.get("lock") is not None else None
    if lock is None and verify != "off":
        raise ConfigError("runtime config: shared layout needs `lock` (the base files to verify) or verify_base off")
    base_dir = _join(root, env.get(BASE_DIR_ENV) or data.get("base_dir", "/base"), "base_dir")
    return RuntimeConfig("shared", port, base_dir=base_dir, adapters=pairs, lock=lock, verify_base=verify)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"runtime config: port must be an integer 1-65535, got {value!r}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ConfigError(f"runtime config: model name {value!r} must be a non-empty string without spaces")
    return value


def _path(data: dict, key: str, root: str) -> str:
    if key not in data:
        raise ConfigError(f"runtime config: `{key}` is required for layout {data['layout']}")
    return _join(root, data[key], key)


def _join(root: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"runtime config: `{key}` must be a non-empty path string, got {value!r}")
    return os.path.normpath(os.path.join(root, value))
