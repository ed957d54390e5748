"""The calibrated path (--calibrate): GPTQ, layer by layer, with memory bounded by one decoder layer.

The calibration text runs through the model once, as one batch, module by module (accuracy/lazy_model.py: each
weight read from the source just before it runs). When it reaches a decoder layer, a hook first runs that layer on
its input with the unquantized weights, gathering the Hessian of every quantized Linear's input; then quantizes
those Linears with GPTQ; then lets the layer run for real on the quantized weights, so the next layer is calibrated
on what the quantized model computes (llm-compressor's sequential pipeline does the same). Each quantized weight's
compressed tensors go to a spill folder at once; the merge's stream (or `packager quantize`) writes them in place of
round-to-nearest. Held at once: one layer's Hessians (one per distinct input: q/k/v and gate/up share theirs), the
weight being quantized in fp32, and the batch's activations; the model's other weights stay on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources

import torch
from safetensors.torch import save_file

from packager.accuracy.lazy_model import WeightSource, build_empty, weights_on_demand
from packager.architecture.load_report import stored_names
from packager.errors import UserInputError
from packager.io.safetensors_format import DTYPES
from packager.quantize.gptq import gptq_weight
from packager.quantize.plan import QuantizePlan, check_tokenizer
from packager.quantize.reference import Reference
from packager.quantize.smooth import smoothing_groups, smoothing_scales
from packager.quantize.tensors import compress_state, compression_scheme, observed_range

SPILL = ".gptq"  # GPTQ's compressed weights, in the staging folder until the output stream writes them
SEQUENCE = 256  # tokens per calibration sequence
MAX_SEQUENCES = 32
Log = Callable[[str], None]


def calibration_text(path: str = "") -> str:
    """The text GPTQ calibrates on: the user's .txt, or a .jsonl's "text" fields, else the one packager ships."""
    if not path:
        return resources.files("packager.data").joinpath("calibration_text.txt").read_text()
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(
            f"cannot read --calibrate {path} ({exc.__class__.__name__}); pass a UTF-8 .txt or .jsonl"
        ) from None
    return _jsonl_text(path, raw) if path.endswith(".jsonl") else raw


def _jsonl_text(path: str, raw: str) -> str:
    import json

    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserInputError(f"--calibrate {path}: line {number} is not JSON; one object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserInputError(f'--calibrate {path}: line {number} has no "text" string; write {{"text": "..."}}')
        texts.append(record["text"])
    return "\n\n".join(texts)


def calibration_batch(tokenizer, text: str) -> torch.Tensor:
    """The text as (sequences, SEQUENCE) token ids; refused when it is shorter than one sequence."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = min(len(ids) // SEQUENCE, MAX_SEQUENCES)
    if count == 0:
        raise UserInputError(
            f"the calibration text has {len(ids)} tokens; GPTQ needs at least {SEQUENCE}: give --calibrate a longer "
            "text (a few thousand tokens of what the model will see)"
        )
    return torch.tensor(ids[: count * SEQUENCE]).view(count, SEQUENCE)


class _Done(Exception):
    """Raised after the last decoder layer: the rest of the model has nothing to calibrate."""


def calibrate(
    model: torch.nn.Module,
    source: WeightSource,
    plan: QuantizePlan,
    ids: torch.Tensor,
    dtypes: dict[str, str],
    spill: str,
    log: Log,
) -> dict[str, str]:
    """GPTQ for every quantized Linear inside the decoder layers of `model` (from `build_empty`), its weights read
    from `source`, on the batch `ids`; each result's compressed tensors written to `spill`. Returns stored weight
    name -> its spill file (`dtypes`: each stored name's safetensors dtype, which the scales keep)."""
    os.makedirs(spill, exist_ok=True)
    run = _Calibration(model, source, plan, dtypes, spill, log)
    layers = _decoder_layers(model)
    hooks = [run.layer_hook(i, len(layers)) for i in range(len(layers))]
    handles = [
        layer.register_forward_pre_hook(hook, with_kwargs=True) for layer, hook in zip(layers, hooks, strict=True)
    ]
    handles.append(layers[-1].register_forward_hook(run.stop))
    try:
        with weights_on_demand(model, run.source), torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    except _Done:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return run.spilled


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList holding most of the parameters: the decoder layers, whatever the family calls them."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


class _Calibration:
    """The state of one calibration pass: quantized weights so far (the source the model runs on)."""

    def __init__(self, model, source, plan, dtypes, spill, log) -> None:
        self.model, self.plan, self.dtypes, self.spill, self.log = model, plan, dtypes, spill, log
        self.stored = stored_names(model, list(dtypes))
        self.unquantized, self.quantized, self.spilled = source, {}, {}
        self.busy = False
        self.scheme = compression_scheme(plan.preset, plan.group_size)

    def stop(self, _module, _args, _output) -> None:
        """After the last decoder layer has run for real (not its calibration run): nothing is left to do."""
        if not self.busy:
            raise _Done

    def source(self, name: str) -> torch.Tensor:
        """A weight as the model runs on it: GPTQ's result once made, else the unquantized one."""
        return self.quantized[name] if name in self.quantized else self.unquantized(name)

    def layer_hook(self, index: int, count: int):
        """The pre-hook of decoder layer `index` (of `count`)."""

        def calibrate_layer(layer: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            """Gather the layer's Hessians on its input, GPTQ its quantized Linears, then let it run on them."""
            if self.busy:
                return
            self.quantized.clear()  # the previous layer's are spilled and done with
            targets = self._targets(layer)
            hessians, maxima = self._hessians(layer, targets, args, kwargs)
            scales = self._smooth(layer, maxima) if self.plan.smoothing is not None else {}
            for name, module_input in targets.items():
                self._quantize(name, hessians[module_input], scales.get(name))
            smoothed = f", {len(scales)} smoothed" if scales else ""
            self.log(f"calibrate: layer {index + 1}/{count} ({len(targets)} weights{smoothed}) by GPTQ")

        return calibrate_layer

    def _targets(self, layer: torch.nn.Module) -> dict[str, str]:
        """The class's weight name -> the name of the module whose input it takes, for each quantized Linear."""
        names = {id(m): n for n, m in self.model.named_modules()}
        wanted = set(self.plan.targets)
        return {
            f"{names[id(m)]}.weight": names[id(m)]
            for m in layer.modules()
            if isinstance(m, torch.nn.Linear) and self.stored.get(f"{names[id(m)]}.weight") in wanted
        }

    def _hessians(self, layer, targets: dict[str, str], args, kwargs) -> tuple[dict, dict]:
        """Run the layer unquantized; H = 2 X^T X / n of each target's input, one per distinct input tensor, and
        each input's per-channel maximum (what smoothing needs); both by the module that reads it."""
        modules = dict(self.model.named_modules())
        by_input: dict[int, torch.Tensor] = {}
        maxima: dict[int, torch.Tensor] = {}
        found: dict[str, int] = {}
        seen: list[torch.Tensor] = []  # held until the layer is done, so no later input reuses an id

        def gather(name: str):
            """The pre-hook gathering module `name`'s input."""

            def hook(_module, inputs) -> None:
                """Add this module's input to the Hessian of that input (q/k/v, gate/up: one shared)."""
                key = id(inputs[0])
                if key not in by_input:
                    x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
                    by_input[key] = 2 * x.T @ x / x.shape[0]
                    maxima[key] = x.abs().amax(0)
                    seen.append(inputs[0])
                found[name] = key

            return hook

        handles = [modules[m].register_forward_pre_hook(gather(m)) for m in set(targets.values())]
        self.busy = True
        try:
            layer(*args, **kwargs)
        finally:
            self.busy = False
            for handle in handles:
                handle.remove()
        return {m: by_input[k] for m, k in found.items()}, {m: maxima[k] for m, k in found.items()}

    def _smooth(self, layer: torch.nn.Module, maxima: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SmoothQuant this layer's groups: each norm's weight divided by its scales (written in its place), and
        the scales each Linear's columns are to be multiplied by, by weight name."""
        names = {id(m): n for n, m in self.model.named_modules()}
        inside = {n for n, _ in layer.named_modules(prefix=names[id(layer)])}
        scales = {}
        for norm, linears in smoothing_groups(names[id(layer)], inside):
            if linears[0] not in maxima:
                continue  # not quantized (ignored): nothing to smooth for
            weights = [self.unquantized(f"{n}.weight") for n in linears]
            s = smoothing_scales(maxima[linears[0]], weights, self.plan.smoothing)
            self._replace(f"{norm}.weight", self.unquantized(f"{norm}.weight") / s)
            scales |= {f"{n}.weight": s for n in linears}
        return scales

    def _replace(self, name: str, value: torch.Tensor) -> None:
        """A tensor that is not quantized but changes (a smoothed norm): run on, and written, in its stored dtype."""
        stored = self.stored[name]
        value = value.to(DTYPES[self.dtypes[stored]])
        self.quantized[name] = value.float()
        self._spill(stored, {"tensor": value})

    def _spill(self, stored: str, tensors: dict[str, torch.Tensor]) -> None:
        path = os.path.join(self.spill, f"{len(self.spilled):05d}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        self.spilled[stored] = path

    def _quantize(self, name: str, hessian: torch.Tensor, smoothing: torch.Tensor | None = None) -> None:
        from compressed_tensors.quantization.utils import calculate_qparams

        stored = self.stored[name]
        weight = self.unquantized(name)
        if smoothing is not None:  # the columns take the scales; the input (so H) is divided by them
            weight, hessian = weight * smoothing, hessian / torch.outer(smoothing, smoothing)
        weight = weight.to(DTYPES[self.dtypes[stored]])
        args = self.scheme.weights
        scale, zero_point = calculate_qparams(*observed_range(weight, args), args)
        result = gptq_weight(weight, hessian, args, scale, zero_point).to(weight.dtype)
        self.quantized[name] = result.float()
        state = {"weight": result, "weight_scale": scale, "weight_zero_point": zero_point}
        self._spill(stored, compress_state(state, self.scheme))


def calibrate_model(reference: Reference, plan: QuantizePlan, spill: str, log: Log) -> dict[str, str]:
    """GPTQ for the quantized weights of the `reference` model (a folder, or the merge made again from base and
    adapter: nothing unquantized is written), on the plan's calibration text, into `spill`: weight name -> its
    compressed tensors' file."""
    from transformers import AutoModelForCausalLM

    model = build_empty(reference.config(), AutoModelForCausalLM)
    ids = calibration_batch(load_tokenizer(reference.tokenizer), calibration_text(plan.calibration or ""))
    return calibrate(model, reference.weights(model), plan, ids, reference.dtypes(), spill, log)


def load_tokenizer(folder: str):
    """The folder's tokenizer, quietly; refused in one line when the folder ships none."""
    import warnings

    from transformers import AutoTokenizer

    check_tokenizer(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(folder)
