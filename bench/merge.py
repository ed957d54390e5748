#!/usr/bin/env python
"""Benchmark `packager merge` against the PEFT merge_and_unload path and a plain `cp -r` of the base.

Builds (once, cached in --work) random bf16 Llama bases with TinyLlama-1.1B and ~3B (OpenLLaMA-3B) dimensions,
sharded like the Hugging Face hub stores them, plus an r=16 LoRA adapter on all seven projections. Then runs, each
in its own process and alternating so they see the same page-cache state:

  peft      AutoModelForCausalLM.from_pretrained + PeftModel.from_pretrained + merge_and_unload + save_pretrained
  packager  packager --quiet merge --adapter A --base B --output O --no-verify
  cp        cp -r BASE OUT (the I/O floor)

and reports each method's wall time and the child's peak RSS (ru_maxrss from os.wait4), with the acceptance targets.
Nothing is dropped from the page cache: the base is read once (untimed) before the first timed run of each size, and
`sync` runs after each output folder is deleted so no run pays for the previous one's write-back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time so --help stays fast
    import torch
    from transformers import LlamaConfig

BENCH_DIR = Path(__file__).resolve().parent
SHARD_BYTES = 10**9
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 16, 32
MIB = 1 << 20
GIB = 1 << 30

# Every method ends with its output on disk (fsync), as packager's merge does before it renames the output into
# place: without that, a 2.2 GB copy lands in the page cache and the "floor" measures memcpy, not I/O.
PEFT_SNIPPET = """
import os, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter)
model = model.merge_and_unload()
model.save_pretrained(out, safe_serialization=True)
for name in os.listdir(out):
    fd = os.open(os.path.join(out, name), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 32000
    max_rss_gib: float = 1.0


SPECS = {
    "1b": ModelSpec("1b", "1.1B", 2048, 5632, 22, 32, 4, max_rss_gib=1.0),
    "3b": ModelSpec("3b", "3B", 3200, 8640, 26, 32, 32, max_rss_gib=1.2),
    "7b": ModelSpec("7b", "7B", 4096, 11008, 32, 32, 32, max_rss_gib=1.2),  # Llama-2-7B's dimensions, 13.5 GB
}
# packager's merge quantizing as it streams: `packager merge --quantize SCHEME --no-verify` (gptq: --calibrate)
QUANTIZED = ("w8a8", "w8a16", "w4a16", "fp8", "w4a16-gptq")
METHODS = ("peft", "packager", *QUANTIZED, "cp")
DEFAULT_METHODS = ("peft", "packager", "cp")
MAX_QUANTIZED_RSS_GIB = 1.5  # issue 17: merge + w8a8 of the 7B-dims model
MAX_QUANTIZED_CP_RATIO = 1.5


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float  # user + system
    rss_kib: int


Results = dict[str, dict[str, list[Sample]]]  # size key -> method -> samples


# ---------------------------------------------------------------------------------------------- model building


def llama_config(spec: ModelSpec) -> LlamaConfig:
    import torch
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        vocab_size=spec.vocab,
        torch_dtype=torch.bfloat16,
        architectures=["LlamaForCausalLM"],
    )


def meta_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of LlamaForCausalLM, from a model on the meta device (no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def plan_shards(shapes: dict[str, tuple[int, ...]], max_bytes: int = SHARD_BYTES) -> list[list[str]]:
    """Split names, in state-dict order, into shards of at most `max_bytes` of bf16 data."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * _numel(shape)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def random_weight(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A bf16 tensor made directly in bf16: ones for norms, N(0, 0.02) otherwise."""
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    return torch.randn(shape, dtype=torch.bfloat16).mul_(0.02)


def build_base(spec: ModelSpec, path: Path) -> None:
    """Write config.json, the shards one at a time, then the index; never more than one shard in memory. The demo's
    tokenizer goes beside (its 384 ids fit any vocabulary): --calibrate reads its text through it."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = llama_config(spec)
    shapes = meta_shapes(config)
    shards = plan_shards(shapes)
    path.mkdir(parents=True)
    config.save_pretrained(path)
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards, start=1):
        file_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: random_weight(name, shapes[name]) for name in names}
        save_file(tensors, str(path / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file_name))
        del tensors
    total = sum(2 * _numel(shape) for shape in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    add_tokenizer(path)


def add_tokenizer(path: Path) -> None:
    """The demo's tokenizer in the base folder (a base built before it had one gets it too)."""
    if not (path / "tokenizer.json").exists():
        from packager.demo import build_tokenizer

        build_tokenizer(str(path))


def build_adapter(spec: ModelSpec, base: Path, path: Path) -> None:
    """A PEFT-format LoRA adapter (fp32, as PEFT saves it) with non-zero A and B on every projection."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    torch.manual_seed(1)
    tensors = {}
    for name, (out_features, in_features) in _target_weights(meta_shapes(llama_config(spec))).items():
        prefix = f"base_model.model.{name.removesuffix('.weight')}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(LORA_R, in_features) / in_features**0.5
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, LORA_R) * 0.01
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules=TARGET_MODULES,
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base.resolve()),
        bias="none",
        fan_in_fan_out=False,
        use_rslora=False,
        use_dora=False,
        modules_to_save=None,
    )
    config.save_pretrained(str(path))


def _target_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {n: s for n, s in shapes.items() if n.endswith(".weight") and n.split(".")[-2] in TARGET_MODULES}


def model_paths(spec: ModelSpec, work: Path) -> tuple[Path, Path]:
    return work / f"base-{spec.key}", work / f"adapter-{spec.key}"


def ensure_models(spec: ModelSpec, work: Path) -> None:
    """Build the base and adapter for `spec` under `work` unless a previous run finished them."""
    built = all(path.with_name(path.name + ".complete").exists() for path in model_paths(spec, work))
    if built and (model_paths(spec, work)[0] / "tokenizer.json").exists():
        return
    # In a child process: a child's ru_maxrss starts at its parent's peak RSS (the kernel carries the
    # pre-exec high-water mark over), so the launcher must never load torch or hold tensors itself.
    subprocess.run([sys.executable, __file__, "--build", spec.key, "--work", str(work)], check=True)


def build_models(spec: ModelSpec, work: Path) -> None:
    base, adapter = model_paths(spec, work)
    for path, build in ((base, lambda p: build_base(spec, p)), (adapter, lambda p: build_adapter(spec, base, p))):
        done = path.with_name(path.name + ".complete")  # beside, not inside: the folder stays a plain HF folder
        if done.exists():
            add_tokenizer(base)
            continue
        shutil.rmtree(path, ignore_errors=True)
        started = time.monotonic()
        print(f"building {path} ...", flush=True)
        build(path)
        done.touch()
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------- running


def method_command(method: str, base: Path, adapter: Path, out: Path) -> list[str]:
    if method == "peft":
        return [sys.executable, "-c", PEFT_SNIPPET, str(base), str(adapter), str(out)]
    flags = ["--adapter", str(adapter), "--base", str(base), "--output", str(out), "--no-verify"]
    if method == "packager":
        return [packager_executable(), "--quiet", "merge", *flags]
    if method in QUANTIZED:
        scheme, _, calibrated = method.partition("-")
        return [
            packager_executable(),
            "--quiet",
            "merge",
            *flags,
            "--quantize",
            scheme,
            *(["--calibrate"] * bool(calibrated)),
        ]
    if method == "cp":
        return ["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/*', str(base), str(out)]
    raise ValueError(method)


def packager_executable() -> str:
    beside = Path(sys.executable).parent / "packager"
    return str(beside) if beside.exists() else (shutil.which("packager") or "packager")


def run_child(command: list[str], log: Path, env: dict[str, str]) -> Sample:
    """Run `command` to completion; its wall time and peak RSS (ru_maxrss, KiB on Linux)."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command[:3]} exited with {proc.returncode}; log {log}:\n{tail}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def warm_up(*folders: Path) -> None:
    """Read every file once so the first timed run does not pay for a cold cache the others do not."""
    buffer = bytearray(1 << 20)  # small: the launcher's own peak RSS leaks into each child's ru_maxrss
    for folder in folders:
        for file in sorted(folder.iterdir()):
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass


def child_env(work: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    env["PACKAGER_CACHE"] = str(work / "packager-cache")  # a private sha256 cache, emptied before each run
    return env


def bench_size(spec: ModelSpec, methods: list[str], repeats: int, work: Path) -> dict[str, list[Sample]]:
    ensure_models(spec, work)
    base, adapter = model_paths(spec, work)
    env, logs = child_env(work), work / "logs"
    logs.mkdir(exist_ok=True)
    warm_up(base, adapter)
    samples: dict[str, list[Sample]] = {m: [] for m in methods}
    for run in range(1, repeats + 1):
        for method in methods:
            out = work / f"out-{spec.key}-{method}"
            _clean(out, work / "packager-cache")
            os.sync()  # no run pays for the previous run's writeback
            sample = run_child(method_command(method, base, adapter, out), logs / f"{spec.key}-{method}-{run}.log", env)
            samples[method].append(sample)
            print(
                f"{spec.label:>5} {method:<9} run {run}: {sample.wall_s:7.1f} s wall {sample.cpu_s:7.1f} s cpu "
                f"{sample.rss_kib / 1024:8.0f} MiB  (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            _clean(out, work / "packager-cache")
    return samples


def _clean(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    for partial in paths[0].parent.glob(f".{paths[0].name}.partial-*"):  # packager's staging folder, if it died
        shutil.rmtree(partial, ignore_errors=True)
    os.sync()


# ---------------------------------------------------------------------------------------------- reporting


def median_wall(samples: list[Sample]) -> float:
    return statistics.median(s.wall_s for s in samples)


def median_rss_mib(samples: list[Sample]) -> float:
    return statistics.median(s.rss_kib for s in samples) / 1024


def table(results: Results) -> str:
    rows = [
        "| model | method | runs | median wall s | min / max wall s | median CPU s | median peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, by_method in results.items():
        for method, samples in by_method.items():
            walls = [s.wall_s for s in samples]
            rows.append(
                f"| {SPECS[key].label} | {method} | {len(samples)} | {median_wall(samples):.1f} | "
                f"{min(walls):.1f} / {max(walls):.1f} | {statistics.median(s.cpu_s for s in samples):.1f} | "
                f"{median_rss_mib(samples):.0f} |"
            )
    return "\n".join(rows)


def ratio_lines(results: Results) -> list[str]:
    lines = []
    for key, m in results.items():
        label = SPECS[key].label
        if "packager" in m and "cp" in m:
            lines.append(f"{label}: packager/cp wall = {median_wall(m['packager']) / median_wall(m['cp']):.2f}")
            # each cp run follows the packager run it is paired with; the floor's spread shows here
            pairs = [p.wall_s / c.wall_s for p, c in zip(m["packager"], m["cp"], strict=True)]
            extra = [p.wall_s - c.wall_s for p, c in zip(m["packager"], m["cp"], strict=True)]
            lines.append(
                f"{label}: packager/cp per run = {', '.join(f'{r:.2f}' for r in pairs)}; "
                f"packager - cp per run median = {statistics.median(extra):.1f} s"
            )
        if "packager" in m and "peft" in m:
            lines.append(f"{label}: peft/packager wall = {median_wall(m['peft']) / median_wall(m['packager']):.2f}")
            rss = median_rss_mib(m["peft"]) / median_rss_mib(m["packager"])
            lines.append(f"{label}: peft/packager peak RSS = {rss:.2f}")
    return lines


def quantized_lines(results: Results) -> list[str]:
    """Each quantized merge against the cp floor and the plain merge; issue 17's targets for merge + w8a8."""
    lines = []
    for key, m in results.items():
        label = SPECS[key].label
        for method in (x for x in QUANTIZED if x in m):
            cp = f", {median_wall(m[method]) / median_wall(m['cp']):.2f}x cp" if "cp" in m else ""
            plain = (
                f", {median_wall(m[method]) / median_wall(m['packager']):.2f}x the plain merge"
                if "packager" in m
                else ""
            )
            rss = median_rss_mib(m[method]) * MIB / GIB
            lines.append(
                f"{label}: merge + {method}: {median_wall(m[method]):.1f} s{cp}{plain}, peak RSS {rss:.2f} GiB"
            )
        if "w8a8" in m and "cp" in m:
            ratio = median_wall(m["w8a8"]) / median_wall(m["cp"])
            rss = median_rss_mib(m["w8a8"]) * MIB / GIB
            lines.append(f"{'PASS' if ratio <= MAX_QUANTIZED_CP_RATIO else 'FAIL'}  {label}: merge + w8a8 wall <= "
                         f"{MAX_QUANTIZED_CP_RATIO}x cp (measured {ratio:.2f}x)")  # fmt: skip
            lines.append(f"{'PASS' if rss <= MAX_QUANTIZED_RSS_GIB else 'FAIL'}  {label}: merge + w8a8 peak RSS <= "
                         f"{MAX_QUANTIZED_RSS_GIB} GiB (measured {rss:.2f} GiB)")  # fmt: skip
    return lines


def target_lines(results: Results) -> list[str]:
    checks: list[tuple[str, Callable[[dict[str, list[Sample]]], float], float, str, tuple[str, ...]]] = [
        (
            "packager wall <= 2x cp floor",
            lambda m: median_wall(m["packager"]) / median_wall(m["cp"]),
            2.0,
            "x",
            ("packager", "cp"),
        ),
        (
            "packager wall <= 0.5x PEFT path",
            lambda m: median_wall(m["packager"]) / median_wall(m["peft"]),
            0.5,
            "x",
            ("packager", "peft"),
        ),
    ]
    lines = []
    for key, m in results.items():
        spec = SPECS[key]
        rss_check = (
            f"packager peak RSS <= {spec.max_rss_gib:g} GiB",
            lambda m: median_rss_mib(m["packager"]) * MIB / GIB,
            spec.max_rss_gib,
            " GiB",
            ("packager",),
        )
        for name, measure, limit, unit, needs in [*checks, rss_check]:
            if not all(n in m for n in needs):
                continue
            value = measure(m)
            verdict = "PASS" if value <= limit else "FAIL"
            lines.append(f"{verdict}  {spec.label}: {name} (measured {value:.2f}{unit})")
    return lines


def report(results: Results, command: str) -> str:
    launcher_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = [
        f"command: {command}",
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine: {os.cpu_count()} cores ({_cpu_model()}), {_ram_gib():.1f} GiB RAM",
        "load average at the end (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"peak RSS floor: {launcher_mib:.0f} MiB (the launcher's own peak, which every child's ru_maxrss starts from)",
        "",
    ]
    return "\n".join(
        [
            *header,
            table(results),
            "",
            "ratios (medians):",
            *ratio_lines(results),
            "",
            "targets (medians):",
            *target_lines(results),
            "",
            "quantized as the merge streams (medians):",
            *quantized_lines(results),
        ]
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work",
        type=Path,
        default=BENCH_DIR / "work",
        help="folder for the generated models, outputs and logs (default: bench/work, git-ignored)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and size (default 3)")
    parser.add_argument(
        "--sizes", default="1b,3b", help="comma-separated model sizes from: " + ", ".join(SPECS) + " (default: 1b,3b)"
    )
    parser.add_argument(
        "--peft-sizes",
        default="1b",
        help="sizes at which to run the PEFT path too (default 1b; at 3b it holds the whole model, "
        "~7+ GB, and takes minutes)",
    )
    parser.add_argument("--skip-peft", action="store_true", help="do not run the PEFT path at any size")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated methods from: " + ", ".join(METHODS) + f" (default: {','.join(DEFAULT_METHODS)}); "
        "w8a8 etc.: packager merge --quantize SCHEME, w4a16-gptq: with --calibrate",
    )
    parser.add_argument("--build", choices=list(SPECS), help=argparse.SUPPRESS)  # internal: build in a child
    args = parser.parse_args(argv)
    args.sizes = _size_list(parser, args.sizes)
    args.peft_sizes = [] if args.skip_peft else _size_list(parser, args.peft_sizes)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in args.methods if m not in METHODS]:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _size_list(parser: argparse.ArgumentParser, text: str) -> list[str]:
    sizes = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SPECS]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SPECS)}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.build:
        build_models(SPECS[args.build], work)
        return 0
    results: Results = {}
    for key in args.sizes:
        methods = [m for m in args.methods if m != "peft" or key in args.peft_sizes]
        results[key] = bench_size(SPECS[key], methods, args.repeats, work)
    command = " ".join(["python", os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)])
    print()
    print(report(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
