"""LitGPT fine-tune runs: the folder `litgpt finetune_lora` writes (`final/`, or `step-NNNNNN/` during training,
each with lit_model.pth.lora, model_config.yaml and hyperparameters.yaml) becomes a PEFT LoRA adapter on the
Hugging Face base, so every later step (merge, parity with PEFT, both layouts) works on it unchanged.

LitGPT fuses q, k and v into one `attn.qkv` projection whose LoRA stacks one A block of rank r per enabled part
and their B rows in q|k|v order (`LoRAQKVLinear`); it scales by lora_alpha / r as PEFT does, and its
convert_lit_checkpoint splits qkv the same way. Only Llama-style models (LLaMAMLP) are mapped.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from packager.errors import AdapterError, IncompatibleAdapterError, UnsafeFormatError
from packager.formats.adapter import Adapter
from packager.formats.peft import converted_folder, write_folder
from packager.formats.peft import read as read_peft

LORA_FILE = "lit_model.pth.lora"
LORA_SAFETENSORS = "lit_model.lora.safetensors"  # the same tensors, converted once (no pickle to trust)
CONVERT = (
    "python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('lit_model.pth.lora', "
    "weights_only=True)['model'], 'lit_model.lora.safetensors')\" in that folder"
)
OTHER_METHODS = {"lit_model.pth.adapter": "adapter", "lit_model.pth.adapter_v2": "adapter_v2"}
LITGPT_CONFIGS = ("model_config.yaml", "hyperparameters.yaml")
STEP_DIR = re.compile(r"^step-(\d+)$")
# LitGPT module -> the Hugging Face Llama module it becomes (qkv is split into three)
MODULES = {
    "attn.proj": "self_attn.o_proj",
    "mlp.fc_1": "mlp.gate_proj",
    "mlp.fc_2": "mlp.up_proj",
    "mlp.proj": "mlp.down_proj",
}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
LORA_KEY = re.compile(r"^transformer\.h\.(?P<layer>\d+)\.(?P<module>[\w.]+)\.lora_(?P<part>[AB])$")
HEAD_KEY = re.compile(r"^lm_head\.lora_(?P<part>[AB])$")


def read(path: str, checkpoint: int | None = None, allow_pickle: bool = False) -> Adapter | None:
    """The LitGPT run at `path` as a PEFT LoRA (converted once, into packager's cache), or None when `path` is not
    a LitGPT run."""
    run = find_run(path, checkpoint)
    if run is None:
        return None
    converted = as_peft_adapter(run, allow_pickle)
    note = f"LitGPT run {run} mapped onto the Hugging Face modules as a PEFT LoRA ({converted})"
    return dataclasses.replace(read_peft(converted), notes=(note,))


def find_run(path: str, checkpoint: int | None = None) -> str | None:
    """The LitGPT checkpoint folder `path` names (itself, its final/, its newest or chosen step-N), or None when
    `path` is not a LitGPT run; a run of a non-LoRA method is refused."""
    if not os.path.isdir(path):
        return None
    steps = {int(m.group(1)): os.path.join(path, n) for n in os.listdir(path) if (m := STEP_DIR.match(n))}
    if checkpoint is not None and checkpoint in steps:
        return _checked(steps[checkpoint])
    if checkpoint is not None and any(_is_checkpoint(f) for f in steps.values()):
        found = ", ".join(str(n) for n in sorted(steps))
        raise AdapterError(f"{path} has no step-{checkpoint:06d} (found steps: {found}); pick one of those")
    for folder in (path, os.path.join(path, "final")):
        if _is_checkpoint(folder):
            return _checked(folder)
    lora_steps = {n: f for n, f in steps.items() if _is_checkpoint(f)}
    return _checked(lora_steps[max(lora_steps)]) if lora_steps else None


def _is_checkpoint(folder: str) -> bool:
    names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return "hyperparameters.yaml" in names and bool({LORA_FILE, LORA_SAFETENSORS, *OTHER_METHODS} & names)


def _checked(folder: str) -> str:
    for name, method in OTHER_METHODS.items():
        lora = any(os.path.isfile(os.path.join(folder, n)) for n in (LORA_FILE, LORA_SAFETENSORS))
        if os.path.isfile(os.path.join(folder, name)) and not lora:
            raise IncompatibleAdapterError(
                f"{folder} is a LitGPT `{method}` run: its prefix and gating modules do not fold into the weights, "
                "so there is nothing to merge; fine-tune with `litgpt finetune_lora` instead, or serve it with LitGPT"
            )
    return folder


def as_peft_adapter(folder: str, allow_pickle: bool) -> str:
    """The PEFT adapter made from the LitGPT checkpoint `folder` (once per content, in packager's cache)."""
    converted = os.path.join(folder, LORA_SAFETENSORS)
    lora_path = converted if os.path.isfile(converted) else os.path.join(folder, LORA_FILE)
    if lora_path != converted and not allow_pickle:
        raise UnsafeFormatError(
            f"{lora_path} is a pickle (torch.save), which can run code when loaded; pass --allow-pickle if you trust "
            f"it (it is then loaded with weights_only=True), or convert it: {CONVERT}"
        )
    config, hparams = _yaml(folder, "model_config.yaml"), _yaml(folder, "hyperparameters.yaml")
    if config.get("mlp_class_name") != "LLaMAMLP" or config.get("n_expert"):
        raise IncompatibleAdapterError(
            f"{folder} is a LitGPT {config.get('mlp_class_name', 'unknown')} model; packager maps Llama-style "
            "(LLaMAMLP) runs only: merge it with `litgpt merge_lora` and `litgpt convert_from_litgpt`, then package "
            "the Hugging Face folder"
        )
    target = converted_folder("litgpt", [lora_path, *(os.path.join(folder, n) for n in LITGPT_CONFIGS)])
    if not os.path.isfile(os.path.join(target, "adapter_config.json")):
        _write_adapter(folder, lora_path, config, hparams, target)
    return target


def _write_adapter(folder: str, lora_path: str, config: dict, hparams: dict, target: str) -> None:
    import torch

    if lora_path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(lora_path)
    else:
        state = torch.load(lora_path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    r, alpha = int(hparams.get("lora_r", 8)), hparams.get("lora_alpha", 16)
    tensors = peft_tensors(state, {**config, **hparams}, r)
    write_folder(target, _adapter_config(tensors, config, r, alpha), tensors, beside=folder)


def peft_tensors(state: dict[str, Any], config: dict, r: int) -> dict[str, Any]:
    """LitGPT's LoRA factors under PEFT's names for the Hugging Face Llama modules (qkv split into q, k, v)."""
    out = {}
    for key, tensor in state.items():
        match, head = LORA_KEY.match(key), HEAD_KEY.match(key)
        if head is not None:
            out[f"base_model.model.lm_head.lora_{head['part']}.weight"] = tensor.contiguous()
            continue
        if match is None:
            raise IncompatibleAdapterError(f"LitGPT LoRA tensor {key} is of a kind packager does not map; report it")
        layer, module = match["layer"], match["module"]
        if module == "attn.qkv":
            continue
        if module not in MODULES:
            raise IncompatibleAdapterError(f"LitGPT LoRA on {module} is not mapped to a Hugging Face module")
        out[f"base_model.model.model.layers.{layer}.{MODULES[module]}.lora_{match['part']}.weight"] = (
            tensor.contiguous()
        )
    for key in state:
        match = LORA_KEY.match(key)
        if match is not None and match["module"] == "attn.qkv" and match["part"] == "A":
            out.update(_split_qkv(match["layer"], state[key], state[key[:-1] + "B"], config, r))
    return out


def _split_qkv(layer: str, a: Any, b: Any, config: dict, r: int) -> dict[str, Any]:
    """One (A, B) pair per enabled part: A rows r*j.., B rows in q|k|v order, as LoRAQKVLinear computes them."""
    head = config.get("head_size") or config["n_embd"] // config["n_head"]
    sizes = (head * config["n_head"], head * (config.get("n_query_groups") or config["n_head"]))
    sizes = (sizes[0], sizes[1], sizes[1])
    enabled = [i for i, flag in enumerate(_enabled(config, a, b, sizes, r)) if flag]
    out, row = {}, 0
    for j, part in enumerate(enabled):
        prefix = f"base_model.model.model.layers.{layer}.{QKV[part]}"
        out[f"{prefix}.lora_A.weight"] = a[j * r : (j + 1) * r].contiguous()
        out[f"{prefix}.lora_B.weight"] = b[row : row + sizes[part]].contiguous()
        row += sizes[part]
    return out


def _enabled(config: dict, a: Any, b: Any, sizes: tuple[int, int, int], r: int) -> tuple[bool, bool, bool]:
    flags = tuple(bool(config.get(f"lora_{n}", n != "key")) for n in ("query", "key", "value"))
    if a.shape[0] != r * sum(flags) or b.shape[0] != sum(s for s, f in zip(sizes, flags, strict=True) if f):
        raise IncompatibleAdapterError(
            f"LitGPT qkv LoRA shapes A {list(a.shape)}, B {list(b.shape)} do not fit lora_r {r} and the enabled "
            "query/key/value of hyperparameters.yaml; pass the run's own folder"
        )
    return flags


def _adapter_config(tensors: dict, config: dict, r: int, alpha: float) -> dict[str, Any]:
    targets = sorted({key.split(".")[-3] for key in tensors})
    hf = config.get("hf_config") or {}
    base = f"{hf['org']}/{hf['name']}" if hf.get("org") and hf.get("name") else None
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }


def _yaml(folder: str, name: str) -> dict:
    import yaml

    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise AdapterError(f"cannot read {path} ({exc.__class__.__name__}); pass the LitGPT run's folder") from None
    if not isinstance(data, dict):
        raise AdapterError(f"{path} is not a YAML mapping; pass the LitGPT run's folder")
    return data
