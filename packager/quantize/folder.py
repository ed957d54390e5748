"""Quantize an already merged model folder the way the merge does it: each tensor read once, quantized if the plan
says so, and written straight into the output shards, so memory stays about one tensor whatever the model size.
"""

from __future__ import annotations

import json
import os
import shutil

from packager.formats.folders import safetensors_files
from packager.io.pipeline import Pipeline
from packager.io.reader import SafetensorsShard
from packager.io.writer import INDEX_FILE, OutputTensor, ShardedWriter, assign_shards
from packager.model_files import LOCK_FILE
from packager.progress import Progress
from packager.quantize.plan import QuantizePlan
from packager.quantize.schemes import Scheme, schemes
from packager.quantize.tensors import Quantizer, compression_scheme, write_quantization_config

NOT_COPIED = (INDEX_FILE, LOCK_FILE, "packager.artefact.json")


def quantize_folder(
    source: str,
    target: str,
    plan: QuantizePlan,
    max_shard_bytes: int,
    progress: Progress | None = None,
    calibrated: dict[str, str] | None = None,
) -> None:
    """Write the quantized model into `target` (an empty staging folder): every tensor of `source` in file order,
    the plan's targets compressed (GPTQ's where `calibrated` has them), then the side files and config.json with
    its quantization_config."""
    progress = progress or Progress("quantize", quiet=True)
    shards = [SafetensorsShard(os.path.join(source, name)) for name in safetensors_files(source)]
    quantizer = Quantizer(plan, calibrated)
    layout = quantizer.layout([OutputTensor(t.name, t.dtype, t.shape) for shard in shards for t in _ordered(shard)])
    with Pipeline() as pipeline:
        writer = ShardedWriter(target, assign_shards(layout, max_shard_bytes), pipeline)
        for shard in shards:
            progress.start(os.path.basename(shard.path), shard.size)
            for name, tensor in shard.iter_tensors(pipeline, hash_bytes=False):
                progress.advance(tensor.numel() * tensor.element_size())
                for out_name, out in quantizer.outputs(name, tensor):
                    writer.write(out_name, out)
            progress.finish()
        writer.close()
    copy_model_files(source, target)
    write_quantization_config(target, plan)


def _ordered(shard: SafetensorsShard):
    return sorted(shard.tensors.values(), key=lambda t: t.start)


def copy_model_files(source: str, target: str) -> None:
    """Every file of a model folder but its weights, their index and packager's own records (config, tokenizer,
    generation and processor configs, sentence-transformers' modules), sub-folders included."""
    for root, _dirs, names in os.walk(source):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), source)
            if name.endswith(".safetensors") or relative in NOT_COPIED:
                continue
            os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
            shutil.copy2(os.path.join(root, name), os.path.join(target, relative))


def quantization_of(folder: str) -> dict | None:
    """The folder's config.json quantization_config, if any."""
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f).get("quantization_config")


def scheme_of(folder: str) -> str | None:
    """The registered scheme a compressed-tensors folder was written with, matched on what its config.json's
    quantization_config stores (weight type and bits, whether activations are quantized), or None."""
    quant = quantization_of(folder) or {}
    if quant.get("quant_method") != "compressed-tensors":
        return None
    group = next(iter((quant.get("config_groups") or {}).values()), {})
    weights = group.get("weights") or {}
    found = (weights.get("type"), weights.get("num_bits"), bool(group.get("input_activations")))
    return next((s.name for s in schemes("streamed") if _signature(s) == found), None)


def _signature(scheme: Scheme) -> tuple[str, int, bool]:
    made = compression_scheme(scheme.preset, None)
    return (made.weights.type, made.weights.num_bits, made.input_activations is not None)
