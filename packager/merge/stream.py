"""Merge an adapter into its base, streaming tensor by tensor, into a Hugging Face model folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from packager.formats.adapter import AdapterWeights
from packager.io.hashing import claim, remember, settle, sha256_file
from packager.io.pipeline import BufferRing, Pipeline
from packager.io.reader import SafetensorsShard, open_shard
from packager.io.safetensors_format import DTYPES
from packager.io.staging import check_free_space
from packager.io.writer import DEFAULT_MAX_SHARD_BYTES, OutputTensor, ShardedWriter, assign_shards
from packager.lock import plan_lock
from packager.merge.lora_math import Workspace, check_adapter_finite, check_finite, merge_into
from packager.merge.qlora import round_trip
from packager.model_files import LOCK_FILE, PROCESSOR_FILES, TOKENIZER_FILES, sentence_transformers_files
from packager.plan import FileEntry, PackagePlan, QLoRASpec, TensorPlan
from packager.progress import Progress
from packager.quantize.tensors import Quantizer, write_quantization_config
from packager.resolve.resolver import Resolved


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote: the model folder's files (hashed), and the plan with base hashes filled in."""

    plan: PackagePlan
    files: tuple[FileEntry, ...]
    seconds: float


def merge_adapter(
    resolved: Resolved,
    staging: str,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Progress | None = None,
    calibrated: dict[str, str] | None = None,
) -> MergeResult:
    """Write the merged model into `staging` (an empty folder); the caller renames it into place. `calibrated`:
    GPTQ's compressed weights by name (--calibrate), written in place of round-to-nearest."""
    progress = progress or Progress("merge", quiet=True)
    started = time.monotonic()
    plan = resolved.plan
    check_free_space(staging, sum(_nbytes(t) for t in plan.merge.tensors) or _base_bytes(plan))
    if plan.merge.engine == "peft":
        _merge_with_peft(resolved, staging, max_shard_bytes, progress)
        base_hashes: dict[str, str] = {}
    else:
        with _one_torch_thread(resolved.plan.quantize is None):
            base_hashes = _stream_merge(resolved, staging, max_shard_bytes, progress, calibrated or {})
    copy_side_files(resolved, staging)
    if plan.quantize is not None and plan.merge.engine != "peft":  # the PEFT path's quantizer wrote it
        write_quantization_config(staging, plan.quantize)
    plan = _with_base_hashes(plan, base_hashes)
    files = hash_outputs(staging)
    write_merged_lock(plan, files, staging)
    return MergeResult(plan, files, time.monotonic() - started)


def _stream_merge(
    resolved: Resolved, staging: str, max_shard_bytes: int, progress: Progress, calibrated: dict[str, str]
) -> dict[str, str]:
    """Read each base file once, in order, write each output tensor as soon as it is made; return base sha256s."""
    plan, weights = resolved.plan, resolved.weights
    quantizer = Quantizer(plan.quantize, calibrated)  # quantized right after each is merged, before it is written
    layout = quantizer.layout([OutputTensor(t.name, t.dtype, t.shape) for t in plan.merge.tensors])
    adapter, workspace = AdapterWeights(resolved.adapter), Workspace()
    specs = {t.stored_as or t.name: t for t in plan.merge.tensors}  # by the base's name for the tensor
    hashes = {}
    with Pipeline() as pipeline:
        writer = ShardedWriter(staging, assign_shards(layout, max_shard_bytes), pipeline)
        # merged tensors are made here, never in the tensor read: a reader's buffer may still be queued for
        # hashing, and an adapter tensor may be used again
        outputs = BufferRing(pipeline)
        for file_name in weights.files:
            shard = open_shard(os.path.join(plan.base.path, file_name), weights.format)
            known = claim(shard.path)  # hashed ahead (while torch was imported) or remembered from a run before
            progress.start(file_name, shard.size)
            for name, tensor in shard.iter_tensors(pipeline, hash_bytes=known is None):
                progress.advance(tensor.numel() * tensor.element_size())
                spec = specs.get(name)
                if spec is None:
                    continue  # a tensor the task's class does not use (another task's head): left out
                merged = build_tensor(spec, tensor, adapter, workspace, outputs, plan.merge.qlora)
                write_all(writer, quantizer.outputs(spec.name, merged))
                outputs.release()
            hashes[file_name] = settle(shard.path, known) if known is not None else shard.sha256
            remember(shard.path, hashes[file_name])
            progress.finish()
        for spec in plan.merge.tensors:
            if (spec.stored_as or spec.name) not in weights.tensors:  # not stored: an untied lm_head, a task head
                base = _read_base_tensor(resolved, spec.source_key)
                merged = build_tensor(spec, base, adapter, workspace, outputs, plan.merge.qlora)
                write_all(writer, quantizer.outputs(spec.name, merged))
                outputs.release()
        writer.close()
    for name, digest in writer.sha256.items():
        remember(os.path.join(staging, name), digest)
    return hashes


def _merge_with_peft(resolved: Resolved, staging: str, max_shard_bytes: int, progress: Progress) -> None:
    """PEFT's merge (it holds the model); a quantized plan then streams that merge through the quantizer."""
    from packager.merge.peft_engine import merge_with_peft

    if resolved.plan.quantize is None:
        merge_with_peft(resolved, staging, max_shard_bytes, progress)
        return
    from packager.quantize.folder import quantize_folder

    unquantized = os.path.join(staging, ".unquantized")
    merge_with_peft(resolved, unquantized, max_shard_bytes, progress)
    quantize_folder(unquantized, staging, resolved.plan.quantize, max_shard_bytes, progress)
    shutil.rmtree(unquantized)


def write_all(writer: ShardedWriter, tensors) -> None:
    """Hand each (name, tensor) to the writer, in order."""
    for name, tensor in tensors:
        writer.write(name, tensor)


@contextmanager
def _one_torch_thread(enabled: bool = True) -> Iterator[None]:
    """The streaming merge keeps the second core for sha256 (base files ahead, output files behind): with two
    torch threads, OpenMP's spinning workers fight the hashing threads for it (at 1.1B: 4.3 s and 7.2 CPU-s
    with two, 3.4 s and 4.8 CPU-s with one). Rank-r products reduce over r only, so the bits do not change.
    A merge that quantizes as it streams is compute-bound instead: it keeps both (1.1B, w8a8: 15.7 -> 12.3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if enabled else threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _read_base_tensor(resolved: Resolved, name: str) -> torch.Tensor | None:
    if name not in resolved.weights.tensors:
        return None
    path = os.path.join(resolved.plan.base.path, resolved.weights.tensor_file[name])
    if resolved.weights.format == "pickle":
        return dict(open_shard(path, "pickle").iter_tensors())[name]
    return SafetensorsShard(path).read(name)


def build_tensor(
    spec: TensorPlan,
    base: torch.Tensor | None,
    adapter: AdapterWeights,
    workspace: Workspace,
    outputs: BufferRing,
    qlora: QLoRASpec | None = None,
) -> torch.Tensor:
    """One output tensor: its source (rounded through 4-bit in its stored dtype for simulate-nf4), cast to the
    output dtype, plus each delta in order (the first into an output buffer, the rest in place there)."""
    tensor = adapter.get(spec.source_key) if spec.source == "adapter" else base
    if spec.round_trip:
        tensor = round_trip(tensor, spec.round_trip, qlora)
    tensor = tensor.to(DTYPES[spec.dtype])
    if spec.source == "adapter":
        check_finite(spec.name, tensor)
    owned = False
    for delta in spec.deltas:
        a = adapter.get(delta.a_key) if delta.a_key else None
        b = adapter.get(delta.b_key)
        check_adapter_finite(delta.module, a, b)
        tensor = merge_into(tensor, delta, a, b, workspace, out=None if owned else outputs.like(tensor))
        owned = True
    if spec.deltas and tensor.dtype == torch.float16:
        check_finite(spec.name, tensor)  # fp16 can overflow to inf where fp32 and bf16 cannot
    return tensor


def copy_side_files(resolved: Resolved, staging: str) -> None:
    """config.json (with the plan's updates), generation config and the tokenizer the plan chose."""
    plan = resolved.plan
    side = ["generation_config.json", *PROCESSOR_FILES, *sentence_transformers_files(plan.base.path)]
    _copy_if_present(plan.base.path, staging, side)
    source = resolved.adapter.path if plan.merge.tokenizer_from == "adapter" else plan.base.path
    _copy_if_present(source, staging, TOKENIZER_FILES)
    if os.path.exists(os.path.join(staging, "config.json")):
        return  # the PEFT engine saved its own
    with open(os.path.join(plan.base.path, "config.json")) as f:
        config = json.load(f)
    updates = dict(plan.merge.config_updates)
    if "torch_dtype" in updates and "dtype" in config and "torch_dtype" not in config:
        updates["dtype"] = updates.pop("torch_dtype")
    config.update(updates)
    with open(os.path.join(staging, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def _copy_if_present(source: str, target: str, names) -> None:
    for name in names:
        path = os.path.join(source, name)
        if os.path.isfile(path) and not os.path.exists(os.path.join(target, name)):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(path, os.path.join(target, name))


def hash_outputs(folder: str) -> tuple[FileEntry, ...]:
    """Pin every file a step wrote into `folder` (a merge, or the artefact made from it), its lock aside."""
    names = sorted(
        os.path.relpath(os.path.join(root, n), folder)
        for root, _dirs, files in os.walk(folder)
        for n in files
        if not (root == folder and n == LOCK_FILE)
    )
    return tuple(
        FileEntry(n, os.path.getsize(os.path.join(folder, n)), sha256_file(os.path.join(folder, n))) for n in names
    )


def write_merged_lock(plan: PackagePlan, files: tuple[FileEntry, ...], staging: str) -> None:
    """Write the plan's lock, with the merged output files added, into `staging`."""
    lock = plan_lock(plan)
    lock["output"] = {"files": [dataclasses.asdict(f) for f in files]}
    with open(os.path.join(staging, LOCK_FILE), "w") as f:
        json.dump(lock, f, indent=2, sort_keys=True)
        f.write("\n")


def _with_base_hashes(plan: PackagePlan, hashes: dict[str, str]) -> PackagePlan:
    files = tuple(
        dataclasses.replace(
            f, sha256=f.sha256 or hashes.get(f.path) or sha256_file(os.path.join(plan.base.path, f.path))
        )
        for f in plan.base.files
    )
    return dataclasses.replace(plan, base=dataclasses.replace(plan.base, files=files))


def _nbytes(spec: TensorPlan) -> int:
    return OutputTensor(spec.name, spec.dtype, spec.shape).nbytes


def _base_bytes(plan: PackagePlan) -> int:
    return sum(f.size for f in plan.base.files)
