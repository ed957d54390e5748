"""Check that an adapter fits its base and decide, tensor by tensor, how the merge will be done.

Everything here reads headers and configs only, so a mismatch is reported before any heavy work.
"""

from __future__ import annotations

import re
from collections import defaultdict

from packager.architecture.inspect import Architecture
from packager.architecture.weights import BaseWeights
from packager.dtypes import SAFETENSORS_NAME
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.formats.adapter import Adapter
from packager.plan import MergePlan
from packager.resolve.prompt_learning import SERVED_TYPES
from packager.resolve.tensor_plan import TensorPlanBuilder, tokenizer_from

DTYPE_CHOICES = {"auto": None, **SAFETENSORS_NAME}
PEFT_MERGEABLE = {
    "LORA",
    "ADALORA",
    "IA3",
    "LOHA",
    "LOKR",
    "VERA",
    "OFT",
    "BOFT",
    "FOURIERFT",
    "HRA",
    "BONE",
    "RANDLORA",
}
LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B)$"
)
IA3_KEY = re.compile(r"^(?P<module>.+)\.ia3_l$")
DORA_KEY = re.compile(r"\.lora_magnitude_vector(\.weight)?$")
PARAM_KEY = re.compile(r"\.(weight|bias)$")
WRAPPED_PARAM = re.compile(r"\.(modules_to_save|original_module|base_layer)(\.[^.]+)?\.(weight|bias)$")


def _param_name(key: str) -> str:
    """`lm_head.modules_to_save.default.weight` and `embed.base_layer.weight` name `lm_head.weight`, `embed.weight`."""
    return WRAPPED_PARAM.sub(r".\3", key)


ENGINES = ("auto", "stream", "peft")


def plan_merge(
    adapter: Adapter, arch: Architecture, weights: BaseWeights, dtype: str = "auto", engine: str = "auto"
) -> MergePlan:
    """Check the adapter against the base and return how every output tensor is made."""
    if dtype not in DTYPE_CHOICES:
        raise UserInputError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPE_CHOICES)}")
    if engine not in ENGINES:
        raise UserInputError(f"unknown --engine {engine!r}; use one of {', '.join(ENGINES)}")
    fallback = _needs_peft_engine(adapter, arch)
    if fallback and engine == "stream":
        raise UserInputError(f"--engine stream cannot merge this adapter: {fallback}; use --engine auto or peft")
    lora, replacements, ia3 = _classify_keys(adapter)
    if fallback or engine == "peft":
        reason = fallback or "requested with --engine peft"
        updates = {**_peft_config_updates(adapter, arch), **_head_updates(adapter, arch, weights, replacements)}
        return MergePlan("peft", reason, dtype, (), updates, tokenizer_from(adapter))
    _check_targets_exist(adapter, arch)
    builder = TensorPlanBuilder(adapter, arch, weights, DTYPE_CHOICES[dtype])
    for module, parts in sorted(lora.items()):
        builder.add_lora(module, parts)
    for module, key in sorted(ia3.items()):
        builder.add_ia3(module, key, _is_feedforward(adapter, module))
    for param, key in sorted(replacements.items()):
        builder.add_replacement(param, key)
    return builder.build(dtype)


def _needs_peft_engine(adapter: Adapter, arch: Architecture) -> str:
    """Return why PEFT's own merge must be used, or "" when the streaming merge handles it."""
    if adapter.peft_type not in PEFT_MERGEABLE:
        raise IncompatibleAdapterError(
            f"peft_type {adapter.peft_type or '(missing)'} is not one packager merges "
            f"({', '.join(sorted(PEFT_MERGEABLE))}) or serves unmerged ({', '.join(SERVED_TYPES)}); train the "
            "adapter with one of these"
        )
    if adapter.peft_type == "IA3":
        return _ia3_fallback(adapter, arch)
    if adapter.peft_type != "LORA":
        return f"{adapter.peft_type} adapters are merged by PEFT's merge_and_unload"
    if adapter.config.get("ensure_weight_tying"):
        return "ensure_weight_tying adapters are merged by PEFT's merge_and_unload"
    if adapter.config.get("use_dora"):
        return "DoRA adapters are merged by PEFT's merge_and_unload"
    unknown = [k for k in adapter.tensors if not (LORA_KEY.match(k) or PARAM_KEY.search(k))]
    if any(DORA_KEY.search(k) for k in unknown):
        return "DoRA magnitude vectors found; merged by PEFT's merge_and_unload"
    if unknown:
        return f"adapter tensor {unknown[0]} is of a kind the streaming merge does not know; merged by PEFT"
    for key in adapter.tensors:
        match = LORA_KEY.match(key)
        if match and arch.module_kinds.get(match["module"]) == "other":
            return f"LoRA on module {match['module']} of a kind other than Linear/Conv1D/Embedding; merged by PEFT"
    return ""


def _ia3_fallback(adapter: Adapter, arch: Architecture) -> str:
    """Why PEFT's merge must take this (IA)3 adapter, or "": the stream scales Linear and Conv1D weights."""
    for key in adapter.tensors:
        match = IA3_KEY.match(key)
        if match is None and not PARAM_KEY.search(key):
            return f"adapter tensor {key} is of a kind the streaming merge does not know; merged by PEFT"
        if match and arch.module_kinds.get(match["module"]) not in ("linear", "conv1d"):
            return f"(IA)3 on module {match['module']}, not a Linear or Conv1D; merged by PEFT"
    return ""


def _is_feedforward(adapter: Adapter, module: str) -> bool:
    """Whether PEFT treats `module` as feed-forward (its input scaled): feedforward_modules matched as PEFT
    matches target_modules (a regex in full, or names the module path ends with)."""
    modules = adapter.config.get("feedforward_modules") or []
    if isinstance(modules, str):
        return re.fullmatch(modules, module) is not None
    return any(module == name or module.endswith(f".{name}") for name in modules)


def _classify_keys(adapter: Adapter) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, str]]:
    """Split adapter keys into LoRA factors per module, whole tensors that replace base tensors, and (IA)3
    vectors per module.

    PEFT loads a module-to-save from its plain key (`lm_head.weight`); the `.modules_to_save.` and
    `.original_module.` copies it may also save are used only when no plain key exists (older PEFT).
    """
    lora: dict[str, dict[str, str]] = defaultdict(dict)
    replacements: dict[str, str] = {}
    ia3: dict[str, str] = {}
    for key in sorted(adapter.tensors, key=lambda k: (".modules_to_save." in k, k)):
        match, vector = LORA_KEY.match(key), IA3_KEY.match(key)
        if match:
            lora[match["module"]][match["part"]] = key
        elif vector:
            ia3[vector["module"]] = key
        elif ".original_module." not in key:
            replacements.setdefault(_param_name(key), key)
    return dict(lora), replacements, ia3


def _check_targets_exist(adapter: Adapter, arch: Architecture) -> None:
    targets = adapter.config.get("target_modules")
    if not isinstance(targets, list):
        return  # a regex or "all-linear": the adapter's own tensors are checked one by one instead
    names = arch.module_kinds.keys()
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise IncompatibleAdapterError(
            f"target module(s) {', '.join(missing)} from the adapter config do not exist in the base "
            f"({arch.fingerprint.model_type}); the adapter was trained on another architecture: pass the right --base"
        )


def _head_updates(adapter: Adapter, arch: Architecture, weights: BaseWeights, replacements: dict[str, str]) -> dict:
    """For PEFT's merge: the heads the class needs come from the adapter (else refused), and their label count
    is the one the class must be built with so PEFT can load them."""
    heads = TensorPlanBuilder(adapter, arch, weights, None)
    for param, key in sorted(replacements.items()):
        if param in arch.missing:
            heads.add_replacement(param, key)
    heads.check_heads_supplied()
    return {k: v for k, v in heads.config_updates.items() if k in ("id2label", "label2id")}


def _peft_config_updates(adapter: Adapter, arch: Architecture) -> dict:
    """The PEFT engine must resize embeddings first when the adapter's saved embedding rows outnumber the base's."""
    embeddings = {f"{arch.input_embedding}.weight", f"{arch.output_embedding}.weight"}
    rows = [t.shape[0] for k, t in adapter.tensors.items() if _param_name(k) in embeddings]
    vocab = arch.fingerprint.vocab_size or 0
    return {"vocab_size": max(rows)} if rows and max(rows) > vocab else {}
