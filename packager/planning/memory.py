"""What each step of a job will hold in memory at its peak, stated before any of it runs, and a step that would not
fit this machine refused with the figure and what to do instead, rather than killed half way.

The figures are models of the code, not guesses: the streaming merge holds two read buffers of the largest base
tensor, two output buffers and two fp32 scratch buffers of the largest merged one; quantizing a weight makes a few
fp32-sized temporaries of it; the accuracy pass holds one weight in fp32 and two logits tensors; PEFT's engine and
the parity check load the whole model; an ONNX export holds the fp32 graph about twice (four times for int8:
onnxruntime's quantizer keeps the fp32 graph beside its own copy). bench/RESULTS.md checks them against the
peak RSS measured ("memory planned vs measured").
"""

from __future__ import annotations

import os

from packager.errors import UserInputError
from packager.io.safetensors_format import element_size
from packager.plan import PackagePlan, StepMemory

RUNTIME_BYTES = 550 << 20  # Python, torch, transformers and compressed-tensors imported: what a tiny job peaks at
TEXT_TOKENS = 256  # the accuracy pass's sequence (accuracy/logits.py MAX_TEXT_TOKENS)
CALIBRATION_TOKENS = 32 * 256  # the largest calibration batch (quantize/calibrate.py MAX_SEQUENCES x SEQUENCE)
GB = 1e9


DEFAULT_MAX_VERIFY_BYTES = 8 * 10**9  # a merge larger than this skips the parity check (it loads the model twice)


def plan_memory(plan: PackagePlan, verify: bool = True) -> tuple[StepMemory, ...]:
    """Every step's expected peak, in the order they run (resolve is headers only: not listed)."""
    merge = plan.merge
    if merge is None:
        return ()
    sizes = [(t.dtype, _count(t.shape)) for t in merge.tensors]
    model = sum(element_size(dtype) * n for dtype, n in sizes)
    largest = max((element_size(dtype) * n for dtype, n in sizes), default=0)
    widest = max((n for _dtype, n in sizes), default=0)
    changed = max((_count(t.shape) for t in merge.tensors if t.deltas), default=0)
    steps = []
    if merge.engine == "peft":
        steps.append(StepMemory("merge", RUNTIME_BYTES + int(1.3 * model), "PEFT's merge_and_unload holds the model"))
    else:
        buffers = 4 * largest + 8 * changed
        steps.append(StepMemory("merge", RUNTIME_BYTES + buffers, "streamed: 4 tensor buffers + 2 fp32 scratch"))
    if plan.quantize is not None and plan.quantize.calibration is not None:
        steps.append(StepMemory("calibrate", RUNTIME_BYTES + _calibration_bytes(merge.tensors, plan.quantize),
                                "GPTQ: one layer's Hessians and the batch's activations"))  # fmt: skip
    if plan.quantize is not None:
        steps.append(StepMemory("quantize", RUNTIME_BYTES + 4 * largest + 14 * widest, "in the merge's stream"))
        if verify:
            vocab = merge.config_updates.get("vocab_size") or plan.base.fingerprint.vocab_size or 0
            logits = 2 * TEXT_TOKENS * int(vocab) * 4
            steps.append(StepMemory("measure", RUNTIME_BYTES + 8 * widest + logits, "one weight at a time, fp32"))
    elif verify and model <= DEFAULT_MAX_VERIFY_BYTES:  # above it the merge skips parity, as planned here
        steps.append(StepMemory("verify", RUNTIME_BYTES + int(1.2 * model), "PEFT's model, then the merge's"))
    if plan.artefact.export == "onnx":
        times = 4 if plan.artefact.onnx_quantized else 2.1
        steps.append(StepMemory("export", RUNTIME_BYTES + int(times * _fp32(sizes)), f"the fp32 graph ~{times}x"))
    return tuple(steps)


def _calibration_bytes(tensors, quantize) -> int:
    """Hessians of one Llama-style layer (3 of the hidden width: q/k/v, o, gate/up; 1 of the MLP width: down), the
    weight being quantized three times in fp32, and ~6 activations of the widest input for the largest batch."""
    targets = set(quantize.targets)
    widths = [t.shape[1] for t in tensors if t.name in targets and len(t.shape) == 2]
    if not widths:
        return 0
    hidden, widest = min(widths), max(widths)
    weight = max(_count(t.shape) for t in tensors if t.name in targets)
    return 4 * (3 * hidden**2 + widest**2) + 12 * weight + 6 * CALIBRATION_TOKENS * widest * 4


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _fp32(sizes: list[tuple[str, int]]) -> int:
    return 4 * sum(n for _dtype, n in sizes)


def available_memory() -> int:
    """Bytes this process can still use: the kernel's MemAvailable, capped by a cgroup's memory limit."""
    available = _meminfo_available() or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return min(available, _cgroup_room() or available)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_room() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


ALTERNATIVES = {
    "merge": "merge a LoRA with the streaming engine (--engine stream), or run on a machine with more memory",
    "quantize": "run on a machine with more memory",
    "calibrate": "give --calibrate a shorter text, drop --calibrate (round-to-nearest), or run on a machine with "
    "more memory",
    "measure": "pass --no-verify to skip the accuracy measurement, or run on a machine with more memory",
    "export": "serve the merge with vLLM (--quantize w8a8 or fp8 instead of --export onnx), or export on a "
    "machine with more memory",
}


def check_memory(steps: tuple[StepMemory, ...], available: int | None = None) -> None:
    """Refuse the first step that would not fit in `available` bytes (default: this machine's), naming its figure
    and the alternative; the parity check is not refused but skipped (the merge's own reason says so)."""
    room = available_memory() if available is None else available
    for step in steps:
        if step.peak_bytes > room and step.step in ALTERNATIVES:
            raise UserInputError(
                f"the {step.step} step would need about {step.peak_bytes / GB:.1f} GB of memory ({step.basis}) and "
                f"this machine has {room / GB:.1f} GB available; {ALTERNATIVES[step.step]}"
            )
