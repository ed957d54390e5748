"""AdapterHub (`adapters` library) save folders: `model.save_adapter(dir, name)`, or an `AdapterTrainer` run's
`checkpoint-N/<name>/`. Their adapter_config.json holds a `config` block and the base's `model_name` (no
`peft_type`); weights are `adapter.safetensors` or `pytorch_adapter.bin` (a pickle), a static head beside them.

LoRA and (IA)³, the methods the library itself merges into the weights, become a PEFT adapter, written once per
content into packager's cache, so the streaming merge, its proof against PEFT and both layouts take them as they
are:
- LoRA (`composition_mode: add`): W + (B @ A) * alpha / r, PEFT's LoRA arithmetic, key for key;
- (IA)³ (`composition_mode: scale`, r = 1): each output row scaled by lora_B * alpha, PEFT's (IA)³ on a
  non-feed-forward module (the bias is scaled too, as the library's unmerged forward does).
A static head the library saved (`lm_head`, `classifier`) replaces the base's, as PEFT's modules_to_save does.

Every other method (bottleneck adapters and Compacter, prefix and prompt tuning, gated LoRA, unions such as UniPELT,
ReFT) and any adapter with a prediction head (AutoAdapterModel's flex heads) changes the forward pass, not the
weights: it is read as it is (peft_type ADAPTERHUB) and served unmerged by the `adapters` library in packager's
server, its head files beside it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import torch

from packager.adapter_kinds import ADAPTERHUB_TYPE
from packager.errors import AdapterError, IncompatibleAdapterError, UnsafeFormatError
from packager.formats.adapter import Adapter
from packager.formats.peft import converted_folder, read_pickle_shapes, read_safetensors_shapes, write_folder
from packager.formats.peft import read as read_peft
from packager.io.pickle_state import load_pickle_state
from packager.runtime.files import read_json

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = ("model_head.safetensors", "pytorch_model_head.bin")
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
LORA_KEY = re.compile(r"^(?P<module>.+)\.loras\.[^.]+\.lora_(?P<part>[AB])$")
TASKS = {  # the saved model class's suffix -> PEFT task_type
    "ForCausalLM": "CAUSAL_LM",
    "ForSequenceClassification": "SEQ_CLS",
    "ForTokenClassification": "TOKEN_CLS",
    "ForQuestionAnswering": "QUESTION_ANS",
    "Model": "FEATURE_EXTRACTION",
}
HEAD_TASKS = {"classification": "SEQ_CLS", "tagging": "TOKEN_CLS"}  # prediction heads packager's server answers with


def read(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter | None:
    """The AdapterHub adapter at `path` (or in its newest or chosen checkpoint-N) as a PEFT adapter, or None when
    `path` holds none."""
    folder = find_saved(path, checkpoint)
    if folder is None:
        return None
    config = read_json(os.path.join(folder, CONFIG))
    method = merge_method(folder, config["config"])
    if method is None:
        return unmerged_adapter(folder, config, allow_pickle)
    converted = as_peft_adapter(folder, config, method, allow_pickle)
    note = f"AdapterHub {method} adapter {folder} converted to a PEFT adapter ({converted})"
    return dataclasses.replace(read_peft(converted), notes=(note,))


def is_saved(folder: str) -> bool:
    """Whether `folder` holds an AdapterHub adapter_config.json (a `config` block and `model_name`, no peft_type)."""
    config = read_json(os.path.join(folder, CONFIG))
    return isinstance(config, dict) and "config" in config and "model_name" in config and "peft_type" not in config


def find_saved(path: str, checkpoint: int | None = None) -> str | None:
    """`path` when it is an AdapterHub save, else the save inside its newest (or chosen) checkpoint-N, else None."""
    if not os.path.isdir(path):
        return None
    if is_saved(path):
        return path
    runs = {int(m.group(1)): os.path.join(path, n) for n in os.listdir(path) if (m := CHECKPOINT_DIR.match(n))}
    saves = {n: found for n, folder in runs.items() if (found := _saves_in(folder))}
    if not saves:
        return None
    if checkpoint is not None and checkpoint not in saves:
        raise AdapterError(f"{path} has no checkpoint-{checkpoint} (found: {', '.join(map(str, sorted(saves)))})")
    chosen = saves[checkpoint if checkpoint is not None else max(saves)]
    if len(chosen) > 1:
        names = ", ".join(map(os.path.basename, chosen))
        raise AdapterError(f"{os.path.dirname(chosen[0])} holds AdapterHub adapters {names}; pass the one to package")
    return chosen[0]


def _saves_in(folder: str) -> list[str]:
    """An AdapterTrainer checkpoint keeps each adapter in a subfolder named after it."""
    if is_saved(folder):
        return [folder]
    subs = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    return [sub for sub in subs if os.path.isdir(sub) and is_saved(sub)]


def as_peft_adapter(folder: str, config: dict, method: str, allow_pickle: bool) -> str:
    """The PEFT adapter made from the AdapterHub save `folder` (its `config`, merged by `method`: lora or ia3),
    once per content, in packager's cache."""
    weights_path = _weights(folder)
    head_path = _first(folder, HEAD_WEIGHTS)
    sources = [p for p in (weights_path, head_path) if p]
    for path in sources if not allow_pickle else ():  # asked each time, even when converted before
        _refuse_pickle(path)
    target = converted_folder("adapterhub", [os.path.join(folder, CONFIG), *sources])
    if not os.path.isfile(os.path.join(target, "adapter_config.json")):
        tensors = _peft_tensors(_load(weights_path, allow_pickle), method, config["config"], folder)
        head = _load(head_path, allow_pickle) if head_path else {}
        write_folder(target, _peft_config(config, method, tensors, head), {**tensors, **_head_tensors(head)}, folder)
    return target


def merge_method(folder: str, block: Any) -> str | None:
    """`lora` or `ia3` when the library's own merge applies (and no prediction head rides on it), else None."""
    if not isinstance(block, dict):
        raise AdapterError(f"{folder}/{CONFIG} has a `config` that is not an object; re-save it with `adapters` 1.x")
    if flex_head(folder) is not None or block.get("architecture") != "lora" or block.get("use_gating"):
        return None
    if block.get("use_dora") or block.get("vera_d") is not None or block.get("vera_b") is not None:
        raise IncompatibleAdapterError(
            f"{folder} is an AdapterHub DoRA or VeRA adapter, which packager does not read yet; train a LoRA or "
            "(IA)3 adapter"
        )
    mode = block.get("composition_mode", "add")
    if mode == "scale" and block.get("r", 1) == 1:
        return "ia3"
    return "lora" if mode == "add" else None


def describe(block: dict) -> str:
    """The method in words: `bottleneck`, `Compacter`, `prefix_tuning`, `union of prefix_tuning + lora + ...`."""
    architecture = block.get("architecture")
    if architecture == "union":
        parts = [describe(c) for c in block.get("configs", []) if isinstance(c, dict)]
        return f"union of {' + '.join(parts)}"
    if architecture is None:
        return "Compacter" if block.get("phm_layer") else "bottleneck"
    return f"gated {architecture}" if block.get("use_gating") else str(architecture)


def flex_head(folder: str) -> dict | None:
    """The prediction head's config (AutoAdapterModel's flex heads), or None (no head, or a static one)."""
    head_config = read_json(os.path.join(folder, HEAD_CONFIG))
    head = head_config.get("config") if isinstance(head_config, dict) else None
    return head if isinstance(head, dict) else None


def unmerged_adapter(folder: str, config: dict, allow_pickle: bool) -> Adapter:
    """The save as it is, served unmerged by the `adapters` library: its config in PEFT's terms (peft_type
    ADAPTERHUB, the base, the task) with the library's own under `adapterhub`, tensor shapes, and its head files."""
    weights = _weights(folder)
    side = [n for n in (HEAD_CONFIG, *HEAD_WEIGHTS) if os.path.isfile(os.path.join(folder, n))]
    for path in [weights, *(os.path.join(folder, n) for n in side if n != HEAD_CONFIG)] if not allow_pickle else ():
        _refuse_pickle(path)
    head = flex_head(folder)
    method = describe(config["config"])
    library = {
        "method": f"AdapterHub {method}" + (f" with a {head.get('head_type')} head" if head else ""),
        "model_type": config.get("model_type"),
        "hidden_size": config.get("hidden_size"),
        "head_type": head.get("head_type") if head else None,
        "static_head": next((n for n in side if n != HEAD_CONFIG), None) if head is None else None,
    }
    peft_like = {
        "peft_type": ADAPTERHUB_TYPE,
        "base_model_name_or_path": config["model_name"],
        "task_type": _task(config, head),
        "adapterhub": library,
    }
    shapes = read_pickle_shapes(weights) if weights.endswith(".bin") else read_safetensors_shapes(weights)
    has_tokenizer = os.path.isfile(os.path.join(folder, "tokenizer_config.json"))
    note = f"{library['method']} adapter {folder}: served unmerged by the `adapters` library"
    return Adapter(folder, None, peft_like, weights, shapes, has_tokenizer, (note,), tuple(side))


def _task(config: dict, head: dict | None) -> str | None:
    if head is not None:
        return HEAD_TASKS.get(str(head.get("head_type")))
    return next((t for suffix, t in TASKS.items() if str(config.get("model_class")).endswith(suffix)), None)


def _weights(folder: str) -> str:
    found = _first(folder, WEIGHTS)
    if found is None:
        raise AdapterError(
            f"{folder} has {CONFIG} but neither {' nor '.join(WEIGHTS)}; copy the adapter weights next to it"
        )
    return found


def _peft_tensors(state: dict[str, torch.Tensor], method: str, block: dict, folder: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's keys: lora_A/lora_B.weight, or (IA)3's ia3_l (lora_B scaled by alpha)."""
    tensors = {}
    for key, tensor in state.items():
        match = LORA_KEY.match(key)
        if match is None:
            raise AdapterError(f"{folder}: weight {key} is not a LoRA tensor; re-save the adapter with `adapters` 1.x")
        module, part = match["module"], match["part"]
        if method == "ia3" and part == "B":
            tensors[f"base_model.model.{module}.ia3_l"] = tensor * float(block.get("alpha", 1))
        elif method == "lora":
            tensors[f"base_model.model.{module}.lora_{part}.weight"] = tensor
    return tensors


def _head_tensors(head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"base_model.model.{key}": tensor for key, tensor in head.items()}


def _peft_config(config: dict, method: str, tensors: dict, head: dict) -> dict[str, Any]:
    block = config["config"]
    modules = sorted({_module(key) for key in tensors})
    peft: dict[str, Any] = {
        "peft_type": "LORA" if method == "lora" else "IA3",
        "base_model_name_or_path": config["model_name"],
        "target_modules": modules,
        "modules_to_save": sorted({key.split(".")[0] for key in head}) or None,
        "fan_in_fan_out": config.get("model_type") == "gpt2",  # GPT-2's Conv1D stores weights as (in, out)
        "task_type": next((t for suffix, t in TASKS.items() if str(config.get("model_class")).endswith(suffix)), None),
    }
    if method == "lora":
        return {**peft, "r": int(block["r"]), "lora_alpha": block["alpha"], "bias": "none", "use_rslora": False}
    return {**peft, "feedforward_modules": []}  # the library scales every module's output


def _module(peft_key: str) -> str:
    module = peft_key.removeprefix("base_model.model.")
    return module.rsplit(".", 2 if module.endswith(".weight") else 1)[0]


def load_head(path: str) -> dict[str, torch.Tensor]:
    """A static head's tensors (a pickle only once the read has accepted --allow-pickle; weights_only=True)."""
    return _load(path, allow_pickle=True)


def _load(path: str, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    if not allow_pickle:
        _refuse_pickle(path)
    return load_pickle_state(path)


def _refuse_pickle(path: str) -> None:
    if not path.endswith(".safetensors"):
        raise UnsafeFormatError(
            f"{path} is a pickle file, which can run code when loaded; re-save the adapter with "
            "save_adapter(..., use_safetensors=True), or pass --allow-pickle if you trust it (it is then loaded "
            "with weights_only=True)"
        )


def _first(folder: str, names: tuple[str, ...]) -> str | None:
    return next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)
