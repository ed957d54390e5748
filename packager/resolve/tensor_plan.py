"""Per-tensor merge decisions: which base tensor each LoRA factor lands on, with every shape checked."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from packager.architecture.inspect import Architecture
from packager.architecture.weights import BaseWeights
from packager.dtypes import CONFIG_NAME, FLOAT
from packager.errors import IncompatibleAdapterError
from packager.formats.adapter import Adapter
from packager.plan import Delta, MergePlan, TensorPlan
from packager.resolve.factor_shapes import check_ia3_shape, check_lora_shapes
from packager.resolve.key_layout import output_prefix, stored_names


def tokenizer_from(adapter: Adapter) -> str:
    """The merged model takes the adapter's tokenizer when it ships one."""
    return "adapter" if adapter.has_tokenizer else "base"


def _pattern_value(pattern: dict, module: str, default: float) -> float:
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class TensorPlanBuilder:
    """Accumulates per-tensor decisions, checking every shape against the base."""

    def __init__(self, adapter: Adapter, arch: Architecture, weights: BaseWeights, target_dtype: str | None) -> None:
        self.adapter, self.arch, self.weights, self.target_dtype = adapter, arch, weights, target_dtype
        self.deltas: dict[str, list[Delta]] = defaultdict(list)
        self.sources: dict[str, tuple[str, tuple[int, ...]]] = {}  # stored name -> (adapter key, shape)
        self.new_tensors: dict[str, tuple[str, str, tuple[int, ...], str]] = {}  # name -> (source, key, shape, dtype)
        self.notes: list[str] = []
        self.config_updates: dict = {}
        self.stored_as = stored_names(arch, weights)  # the class's name for a tensor -> the files' name

    def add_lora(self, module: str, parts: dict[str, str]) -> None:
        """Plan the LoRA delta on `module`'s weight (and bias), checking the module's kind and the factor shapes.

        `parts` maps each factor (lora_A.weight, lora_B.weight, lora_embedding_A/B, lora_B.bias) to its adapter key."""
        kind = self._module_kind(module)
        embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
        a_key = parts.get("lora_embedding_A" if embedding else "lora_A.weight")
        b_key = parts.get("lora_embedding_B" if embedding else "lora_B.weight")
        if a_key is None or b_key is None:
            raise IncompatibleAdapterError(f"adapter has only one of lora_A/lora_B for {module}; re-save the adapter")
        if embedding != (kind == "embedding"):
            raise IncompatibleAdapterError(f"adapter LoRA weights for {module} do not fit a base module of kind {kind}")
        weight = self._stored_or_none(f"{module}.weight") or self._untied_output(module)
        a_shape, b_shape = self.adapter.tensors[a_key].shape, self.adapter.tensors[b_key].shape
        rank, scaling = self._scaling(module)
        check_lora_shapes(module, kind, self._shape_of(weight), a_shape, b_shape, rank)
        transpose = kind in ("conv1d", "embedding")
        delta_kind = "embedding" if embedding else "linear"
        self.deltas[weight].append(Delta(delta_kind, module, a_key, b_key, scaling, transpose))
        if "lora_B.bias" in parts:
            bias = self._stored(f"{module}.bias", module)
            self.deltas[bias].append(Delta("bias", module, None, parts["lora_B.bias"], scaling))

    def add_ia3(self, module: str, key: str, feedforward: bool) -> None:
        """Plan (IA)3's scaling of `module`'s weight: its rows by the vector (its input columns, for a feed-forward
        module), and its bias by the same vector unless feed-forward, as PEFT's merge does."""
        kind = self._module_kind(module)
        if kind not in ("linear", "conv1d"):
            raise IncompatibleAdapterError(f"adapter (IA)3 weights for {module} do not fit a base {kind} module")
        weight = self._stored(f"{module}.weight", module)
        check_ia3_shape(module, kind, self._shape_of(weight), self.adapter.tensors[key].shape, feedforward)
        # PEFT multiplies the weight as stored by transpose(ia3_l, fan_in_fan_out): Conv1D keeps (in, out)
        self.deltas[weight].append(Delta("scale", module, None, key, 1.0, kind == "conv1d"))
        bias = self._stored_or_none(f"{module}.bias")
        if bias is not None and not feedforward:
            self.deltas[bias].append(Delta("scale_bias", module, None, key, 1.0))

    def add_replacement(self, param: str, key: str) -> None:
        """Plan base tensor `param` to be taken whole from adapter tensor `key` (e.g. modules_to_save); a different
        shape passes only as an embedding's vocabulary extension."""
        module = param.rsplit(".", 1)[0]
        shape = self.adapter.tensors[key].shape
        kind = self._module_kind(module)
        stored = self._stored_or_none(param)
        if stored is None and self.arch.tied and param == f"{self.arch.output_embedding}.weight":
            self._untie(param, key, shape)
            return
        if stored is None and param in self.arch.missing:
            self._add_head(param, key, shape)
            return
        if stored is None:
            raise IncompatibleAdapterError(
                f"adapter replaces {param} but the base has no such tensor; pass the right --base"
            )
        base_shape = self._shape_of(stored)
        if shape != base_shape:
            self._check_vocab_extension(param, kind, shape, base_shape)
        self.sources[stored] = (key, shape)

    def _add_head(self, param: str, key: str, shape: tuple[int, ...]) -> None:
        """A tensor the task's class needs and the base lacks (a classifier, score or qa_outputs head), taken from
        the adapter's modules_to_save; a shape other than the class's is only a different label count."""
        built = self.arch.missing[param]
        if shape != built:
            labels = self.arch.num_labels
            if labels is None or shape[1:] != built[1:] or built[0] != labels:
                raise IncompatibleAdapterError(
                    f"adapter tensor {param} has shape {list(shape)} but {self.arch.model_class} builds it as "
                    f"{list(built)}; the adapter was trained on another base: pass the right --base"
                )
            self._set_labels(shape[0])
        self.new_tensors[param] = ("adapter", key, shape, self.target_dtype or self._base_float_dtype())
        self.notes.append(f"{param} comes from the adapter's modules_to_save (the base has no such head)")

    def _base_float_dtype(self) -> str:
        """What PEFT's merged head ends up in: the dtype the base loads in (its most common float dtype)."""
        counts = Counter(t.dtype for t in self.weights.tensors.values() if t.dtype in FLOAT)
        return counts.most_common(1)[0][0] if counts else "F32"

    def _set_labels(self, count: int) -> None:
        known = self.config_updates.get("id2label")
        if known is not None and len(known) != count:
            raise IncompatibleAdapterError(
                f"the adapter's head tensors disagree on the number of labels ({len(known)} and {count}); "
                "re-save the adapter"
            )
        self.config_updates["id2label"] = {str(i): f"LABEL_{i}" for i in range(count)}
        self.config_updates["label2id"] = {f"LABEL_{i}": i for i in range(count)}

    def check_heads_supplied(self) -> None:
        """Every tensor the class needs must come from the base or the adapter: none left to random init."""
        unfilled = sorted(set(self.arch.missing) - set(self.new_tensors))
        if unfilled:
            raise IncompatibleAdapterError(
                f"{self.arch.model_class} needs {', '.join(unfilled[:4])}{' ...' if len(unfilled) > 4 else ''}, "
                "which neither the base nor the adapter holds: transformers would initialize it at random, so "
                "the merged model could not answer as the trained one; save the adapter with that module in "
                "modules_to_save, or pass the base it was trained on"
            )

    def _untie(self, param: str, key: str, shape: tuple[int, ...]) -> None:
        embed = self._input_embedding_tensor()
        self.new_tensors[param] = ("adapter", key, shape, self.target_dtype or self.weights.tensors[embed].dtype)
        self._note_untied(param)
        if shape[0] != self.weights.tensors[embed].shape[0]:
            self._check_vocab_extension(param, "embedding", shape, self.weights.tensors[embed].shape)

    def _untied_output(self, module: str) -> str:
        """LoRA on a tied lm_head changes the output projection only (PEFT's merge would also change the input
        embeddings, see PEFT #2777): write lm_head as its own tensor, made from the embeddings plus the delta."""
        param = f"{module}.weight"
        if not (self.arch.tied and module == self.arch.output_embedding):
            return self._stored(param, module)
        if param not in self.new_tensors:
            embed = self._input_embedding_tensor()
            info = self.weights.tensors[embed]
            self.new_tensors[param] = ("base", embed, info.shape, self.target_dtype or info.dtype)
            self._note_untied(param)
        return param

    def _input_embedding_tensor(self) -> str:
        return self._stored(f"{self.arch.input_embedding}.weight", self.arch.input_embedding or "embeddings")

    def _note_untied(self, param: str) -> None:
        self.config_updates["tie_word_embeddings"] = False
        self.notes.append(f"the adapter changes {param} apart from the tied input embeddings: written untied")

    def _check_vocab_extension(self, param: str, kind: str, shape: tuple, base_shape: tuple) -> None:
        embeddings = {self.arch.input_embedding, self.arch.output_embedding}
        if param.rsplit(".", 1)[0] not in embeddings or shape[1:] != base_shape[1:]:
            raise IncompatibleAdapterError(
                f"adapter tensor for {param} has shape {list(shape)} but the base has {list(base_shape)}; "
                "the adapter was trained on another base: pass the right --base"
            )
        if shape[0] < base_shape[0]:
            raise IncompatibleAdapterError(
                f"adapter {param} has {shape[0]} rows, fewer than the base's {base_shape[0]}; pass the right --base"
            )
        self.config_updates["vocab_size"] = shape[0]
        tokenizer = (
            "the adapter's tokenizer is used"
            if self.adapter.has_tokenizer
            else "the adapter ships no tokenizer (base tokenizer kept)"
        )
        note = f"vocabulary extended {base_shape[0]} -> {shape[0]} rows by the adapter; {tokenizer}"
        if note not in self.notes:
            self.notes.append(note)

    def _scaling(self, module: str) -> tuple[int, float]:
        config = self.adapter.config
        rank = int(_pattern_value(config.get("rank_pattern"), module, config.get("r", 8)))
        alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        return rank, scaling

    def _module_kind(self, module: str) -> str:
        kind = self.arch.module_kinds.get(module)
        if kind is None:
            similar = [n for n in self.arch.module_kinds if n.endswith("." + module) or module.endswith("." + n)]
            hint = f" (the base has {similar[0]}: a module-prefix mismatch)" if similar else ""
            raise IncompatibleAdapterError(
                f"adapter has weights for module {module}, which the base ({self.arch.fingerprint.model_type}) "
                f"lacks{hint}; pass the base the adapter was trained on with --base"
            )
        return kind

    def _stored_or_none(self, param: str) -> str | None:
        tensors = self.weights.tensors
        if param in tensors:
            return param
        if param in self.stored_as:
            return self.stored_as[param]
        similar = [n for n in tensors if n.endswith("." + param) or param.endswith("." + n)]
        return similar[0] if len(similar) == 1 else None

    def _stored(self, param: str, module: str) -> str:
        stored = self._stored_or_none(param)
        if stored is None and self.arch.tied and param == f"{self.arch.output_embedding}.weight":
            stored = self._stored_or_none(f"{self.arch.input_embedding}.weight")
        if stored is None:
            raise IncompatibleAdapterError(
                f"the base's weight files have no tensor {param} for adapter module {module}; pass the right --base"
            )
        return stored

    def _shape_of(self, stored: str) -> tuple[int, ...]:
        if stored in self.new_tensors:
            return self.new_tensors[stored][2]
        return self.sources[stored][1] if stored in self.sources else self.weights.tensors[stored].shape

    def _check_vocab_consistent(self) -> None:
        """An extended vocabulary needs rows in every embedding the model stores, or it cannot load."""
        vocab = self.config_updates.get("vocab_size")
        if not vocab:
            return
        embeddings = {self.arch.input_embedding, None if self.arch.tied else self.arch.output_embedding} - {None}
        for module in sorted(embeddings):
            stored = self._stored_or_none(f"{module}.weight")
            if stored is None or self._shape_of(stored)[0] != vocab:
                raise IncompatibleAdapterError(
                    f"the adapter extends the vocabulary to {vocab} rows but carries no {module}.weight with "
                    f"{vocab} rows; save the adapter with modules_to_save covering both embeddings and the lm_head"
                )

    def build(self, dtype: str) -> MergePlan:
        """The finished MergePlan: base tensors in file order, then new (untied) ones, with config updates and notes;
        first checks that an extended vocabulary reaches every stored embedding."""
        self._check_vocab_consistent()
        self.check_heads_supplied()
        prefix = output_prefix(self.arch, self.weights, self.new_tensors)
        kept = [info for info in self._base_order() if info.name not in self.arch.unexpected]
        tensors = [self._tensor_plan(info, prefix) for info in kept]
        if self.arch.unexpected:
            self.notes.append(
                f"{len(self.arch.unexpected)} base tensor(s) {self.arch.model_class} does not use left out"
            )
        if self.arch.model_class and self.arch.model_class not in self.arch.fingerprint.architectures:
            self.config_updates["architectures"] = [self.arch.model_class]
        for name, (source, key, shape, out_dtype) in self.new_tensors.items():
            tensors.append(TensorPlan(name, source, key, out_dtype, shape, tuple(self.deltas.pop(name, ()))))
        if self.target_dtype:
            self.config_updates["torch_dtype"] = CONFIG_NAME[self.target_dtype]
        return MergePlan(
            "stream",
            f"{'(IA)3' if self.adapter.peft_type == 'IA3' else 'LoRA'} merged tensor by tensor",
            dtype,
            tuple(tensors),
            dict(self.config_updates),
            tokenizer_from(self.adapter),
            tuple(self.notes),
        )

    def _base_order(self) -> list:
        files = {name: i for i, name in enumerate(self.weights.files)}
        return sorted(
            self.weights.tensors.values(), key=lambda t: (files[self.weights.tensor_file[t.name]], t.start, t.name)
        )

    def _tensor_plan(self, info, prefix: str) -> TensorPlan:
        out_dtype = self.target_dtype if self.target_dtype and info.dtype in FLOAT else info.dtype
        deltas = tuple(self.deltas.get(info.name, ()))
        name, stored_as = (f"{prefix}.{info.name}", info.name) if prefix else (info.name, "")
        if info.name in self.sources:
            key, shape = self.sources[info.name]
            return TensorPlan(name, "adapter", key, out_dtype, shape, deltas, stored_as=stored_as)
        return TensorPlan(name, "base", info.name, out_dtype, info.shape, deltas, stored_as=stored_as)
