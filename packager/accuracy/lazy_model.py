"""A causal LM's forward pass with its weights read on demand, one module at a time.

The model is built from its config with every parameter on the meta device (buffers, such as rotary tables, are
real). A hook gives each module that holds parameters its weights from a `source` just before it runs and takes
them back right after, so the pass holds one module's weights (in fp32) plus the activations, whatever the model's
size: the accuracy of a 7B artefact is measured in about the memory its largest weight takes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

WeightSource = Callable[[str], torch.Tensor]  # a parameter's name as the class names it -> its value
InputHook = Callable[[str, torch.Tensor], torch.Tensor]  # (module name, input) -> the input the module sees


def build_empty(config: Any, model_class: Any) -> torch.nn.Module:
    """The class built from `config` with its parameters on the meta device and its buffers on the CPU, in fp32."""
    from accelerate import init_empty_weights

    with warnings.catch_warnings(), init_empty_weights(include_buffers=False):
        warnings.simplefilter("ignore")
        model = model_class.from_config(config, dtype=torch.float32)
    model.tie_weights()  # empty weights are not tied by the constructor; tied, a source maps one name to the other
    return model.eval()


@torch.inference_mode()
def lazy_logits(
    model: torch.nn.Module, source: WeightSource, ids: torch.Tensor, input_hook: InputHook | None = None
) -> torch.Tensor:
    """(batch, n, vocab) fp32 logits of `ids` through `model` (from `build_empty`), each module's weights read
    from `source` while it runs; `input_hook` may change what chosen modules see (fake-quantized activations)."""
    with weights_on_demand(model, source, input_hook):
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.float()


@contextlib.contextmanager
def weights_on_demand(
    model: torch.nn.Module, source: WeightSource, input_hook: InputHook | None = None
) -> Iterator[None]:
    """Within the block, every module that holds parameters reads them from `source` as it starts and gives them
    back as it ends (and sees its input through `input_hook`, if given)."""
    names = {id(module): name for name, module in model.named_modules()}
    handles, originals = [], []
    for module in model.modules():
        own = {n: p for n, p in module._parameters.items() if p is not None}
        if own:
            originals.append((module, own))
            handles.append(module.register_forward_pre_hook(_loader(names[id(module)], own, source, input_hook)))
            handles.append(module.register_forward_hook(_unloader(own)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, own in originals:  # as built, ties included, even when a forward stopped half way
            module._parameters.update(own)


def _loader(prefix: str, own: dict, source: WeightSource, input_hook: InputHook | None):
    def load(module: torch.nn.Module, args: tuple) -> tuple | None:
        """Give the module its weights from the source (and its input to the hook) before it runs."""
        for name in own:
            full = f"{prefix}.{name}" if prefix else name
            module._parameters[name] = torch.nn.Parameter(source(full).float(), requires_grad=False)
        if input_hook is not None and args and isinstance(args[0], torch.Tensor):
            return (input_hook(prefix, args[0]), *args[1:])
        return None

    return load


def _unloader(own: dict):
    def unload(module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        """Give the module back its meta parameters (ties included) once it has run."""
        module._parameters.update(own)

    return unload
