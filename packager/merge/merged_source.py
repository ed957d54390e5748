"""The unquantized merge as a source of weights for a module-by-module forward pass (accuracy/lazy_model.py): each
merged tensor made again, when asked for, from the base and the adapter by the stream's own `build_tensor`.
Nothing unquantized is written when the merge quantizes as it goes; this is what the quantized checkpoint is
measured against."""

from __future__ import annotations

import os

import torch

from packager.accuracy.lazy_model import WeightSource
from packager.accuracy.logits import AccuracyReport
from packager.architecture.load_report import stored_names
from packager.formats.adapter import AdapterWeights
from packager.io.pipeline import BufferRing, InlinePipeline
from packager.io.reader import SafetensorsShard, open_shard
from packager.io.writer import OutputTensor
from packager.merge.lora_math import Workspace
from packager.merge.stream import build_tensor
from packager.plan import TensorPlan
from packager.quantize.plan import QuantizePlan
from packager.quantize.reference import Reference
from packager.resolve.resolver import Resolved


class MergedSource:
    """The merged weights, made one at a time from the base and the adapter by the merge's own `build_tensor`."""

    def __init__(self, resolved: Resolved, model: torch.nn.Module, base: WeightSource | None = None) -> None:
        self._resolved = resolved
        self._base_weights = base  # the base's weights from elsewhere (a quantized base), by the class's names
        self._specs = {t.name: t for t in resolved.plan.merge.tensors}
        self._names = stored_names(model, list(self._specs))
        self._adapter, self._workspace = AdapterWeights(resolved.adapter), Workspace()
        self._pickled: tuple[str, dict] | None = None

    def __call__(self, name: str) -> torch.Tensor:
        spec = self._specs[self._names[name]]
        outputs = BufferRing(InlinePipeline(), count=1)
        base = self._base_weights(name) if self._base_weights and spec.source == "base" else self._base(spec)
        merged = build_tensor(spec, base, self._adapter, self._workspace, outputs, self._qlora)
        return merged.to(torch.float32, copy=True)  # owned: the ring's buffer is reused by the next call

    @property
    def _qlora(self):
        return self._resolved.plan.merge.qlora

    def _base(self, spec: TensorPlan) -> torch.Tensor | None:
        weights = self._resolved.weights
        name = next((n for n in (spec.stored_as or spec.name, spec.source_key) if n in weights.tensors), None)
        if spec.source == "adapter" or name is None:
            return None
        path = os.path.join(self._resolved.plan.base.path, weights.tensor_file[name])
        if weights.format != "pickle":
            return SafetensorsShard(path).read(name)
        if self._pickled is None or self._pickled[0] != path:  # a pickle is read whole: keep one file's state
            self._pickled = (path, dict(open_shard(path, "pickle").iter_tensors()))
        return self._pickled[1][name]


def merged_reference(resolved: Resolved) -> Reference:
    """The unquantized merge of `resolved`'s base and adapter as the quantize pipeline's reference: its config
    (the base's, updated as the merge updates it), its tensors made again one at a time, the tokenizer the merge
    ships, the merge's dtypes and its unquantized size."""
    plan = resolved.plan

    def config():
        """The base's config with the merge's updates (a grown vocabulary, say)."""
        from transformers import AutoConfig

        made = AutoConfig.from_pretrained(plan.base.path)
        for key, value in plan.merge.config_updates.items():
            setattr(made, key, value)
        return made

    tokenizer = resolved.adapter.path if plan.merge.tokenizer_from == "adapter" else plan.base.path
    dtypes = {t.name: t.dtype for t in plan.merge.tensors}
    size = sum(OutputTensor(t.name, t.dtype, t.shape).nbytes for t in plan.merge.tensors)
    return Reference(
        "the unquantized merge", config, lambda model: MergedSource(resolved, model), tokenizer, lambda: dtypes, size
    )


def measure_merge(resolved: Resolved, folder: str) -> AccuracyReport:
    """The quantized merge in `folder` against the unquantized merge of `resolved`'s base and adapter."""
    from packager.quantize.measure import measure

    return measure(folder, resolved.plan.quantize, merged_reference(resolved).weights)


def measure_quantized_merge(resolved: Resolved, folder: str, scheme: str) -> AccuracyReport:
    """A quantized merge in `folder` against the unquantized merge of `resolved`'s base and adapter, measured as
    `merge --quantize` measured it when it wrote it (`packager verify` of a quantized merge)."""
    from packager.planning.quantized import with_quantization

    return measure_merge(with_quantization(resolved, scheme), folder)


def measure_adapter_on(quantized: str, plan: QuantizePlan, resolved: Resolved) -> AccuracyReport:
    """How far an adapter's answers move on a base quantized by `plan` (in `quantized`): the adapter on the 16-bit
    base against its deltas added to the quantized base's dequantized weights, the activations of the base's
    quantized layers quantized as vLLM runs them (vLLM adds the LoRA path beside, in 16-bit: a close model)."""
    from packager.quantize.measure import measure
    from packager.quantize.sources import FolderSource

    def on_quantized(model: torch.nn.Module) -> WeightSource:
        """The adapter's merged tensors, made on the quantized base's weights."""
        return MergedSource(resolved, model, base=FolderSource(quantized, model, plan))

    return measure(quantized, plan, lambda model: MergedSource(resolved, model), on_quantized)
