"""Serving benchmark: the same requests against packager's own server and vLLM, each in its baked container.

Model: a random Llama of CPU-realistic shape (default hidden 1024, 8 layers, 16 heads of 64, bf16; `--size 1b`
for TinyLlama-1.1B dimensions) with a LoRA, merged by packager. For each runtime: image size, cold start
(`docker run` to the first token), time to first token and latency of one streamed request, and aggregate
generated tokens/s at 1, 4 and 16 concurrent requests (greedy, `max_tokens` each). Servers listen on 127.0.0.1.

    python bench/serve.py [--size small|1b] [--tokens 32] [--runtimes packager,vllm,vllm:w8a8,vllm:fp8]

`RUNTIME:SCHEME` packages the merge quantized (`--quantize SCHEME`, a compressed-tensors checkpoint) for that
runtime: the quantized images against the unquantized one on the same model.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT)]

import httpx  # noqa: E402

from packager.artefact.spec import artefact_spec  # noqa: E402
from packager.demo import build_adapter, build_base  # noqa: E402
from packager.package import package  # noqa: E402
from scripts import base_image, local_engine  # noqa: E402
from tests.requests import package_request  # noqa: E402

ENGINE_ROOT = "/var/tmp/packager-engine"  # the engine `make package` uses: its base images are reused
SIZES = {
    "small": {"hidden_size": 1024, "layers": 8, "heads": 16},
    "1b": {"hidden_size": 2048, "layers": 22, "heads": 32},
}
PROMPTS = [f"Request {i}: tell me about packaging adapters for serving" for i in range(16)]
CONCURRENCY = (1, 4, 16)


def models(work: Path, size: str) -> tuple[str, str]:
    """The base and adapter, made once per size."""
    base, adapter = work / f"base-{size}", work / f"adapter-{size}"
    if not (adapter / "adapter_config.json").exists():
        import torch

        build_base(str(base), seed=0, **SIZES[size])
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(str(base)).to(torch.bfloat16).save_pretrained(str(base))
        build_adapter(str(base), str(adapter), seed=1, r=16)
    return str(base), str(adapter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def complete(url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """One streamed greedy completion: (seconds to the first text, total seconds, chunks received)."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    started, first, pieces = time.monotonic(), None, 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                text = json.loads(line[6:])["choices"][0].get("text") or ""
                if text and first is None:
                    first = time.monotonic() - started
                pieces += 1
    total = time.monotonic() - started
    return first or total, total, pieces


def generated_tokens(url: str, prompt: str, tokens: int) -> tuple[float, int]:
    """One unstreamed greedy completion: (seconds, completion tokens from the usage field)."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    started = time.monotonic()
    answer = httpx.post(f"{url}/v1/completions", json=body, timeout=1200).json()
    return time.monotonic() - started, int(answer["usage"]["completion_tokens"])


def throughput(url: str, concurrency: int, tokens: int) -> float:
    """Aggregate generated tokens per second with `concurrency` requests in flight (each prompt once)."""
    prompts = PROMPTS[: max(concurrency, 4)]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: generated_tokens(url, p, tokens), prompts))
    return sum(n for _, n in results) / (time.monotonic() - started)


def wait_first_token(url: str, container, started: float, timeout: float = 900) -> float:
    """Seconds from `docker run` to the first generated token."""
    while time.monotonic() - started < timeout:
        container.reload()
        if container.status == "exited":
            raise RuntimeError(container.logs().decode()[-3000:])
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                generated_tokens(url, "warm up", 1)
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("server not healthy")


def measure(client, image: str, tokens: int) -> dict:
    """Every figure for one image."""
    port = free_port()
    started = time.monotonic()
    container = client.containers.run(
        image, ["--host", "127.0.0.1", "--port", str(port)], detach=True, network_mode="host", shm_size="1g"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        cold = wait_first_token(url, container, started)
        single = [complete(url, PROMPTS[0], tokens) for _ in range(3)]
        figures = {
            "image_gb": client.images.get(image).attrs["Size"] / 1e9,
            "cold_start_s": cold,
            "ttft_s": statistics.median(s[0] for s in single),
            "latency_s": statistics.median(s[1] for s in single),
        }
        for n in CONCURRENCY:
            figures[f"tok_s_{n}"] = throughput(url, n, tokens)
        return figures
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each request")
    parser.add_argument("--runtimes", default="packager,vllm")
    parser.add_argument("--work", default=str(BENCH_DIR / "work"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    local_engine.ensure_packages()
    engine = local_engine.start_engine(ENGINE_ROOT)
    import os

    import docker

    os.environ["DOCKER_HOST"] = engine.docker_host
    try:
        client = docker.DockerClient(base_url=engine.docker_host, timeout=900)
        base, adapter = models(work, args.size)
        results = {}
        for entry in args.runtimes.split(","):
            runtime, _, scheme = entry.partition(":")
            image = base_image.ensure_base_image(engine.docker_host, runtime)
            name = entry.replace(":", "-")
            request = package_request(
                (("bench", adapter),),
                "baked",
                image,
                f"bench/serve-{name}:{args.size}",
                base=base,
                work=str(work / f"serve-{name}-{args.size}"),
                verify=False,
                quiet=True,
                runtime=runtime,
                builder="docker",
                artefact=artefact_spec(scheme) if scheme else artefact_spec(),
            )
            report = package(request, log=lambda _l: None)
            results[entry] = measure(client, report.image, args.tokens)
            results[entry]["weights_gb"] = (
                sum(layer["size"] for layer in report.layers if ".safetensors" in layer["content"]) / 1e9
            )
            print(entry, json.dumps(results[entry]), flush=True)
        print_table(results, args)
        (work / f"serve-{args.size}.json").write_text(json.dumps(results, indent=2))
    finally:
        local_engine.stop_engine(engine)
    return 0


def print_table(results: dict, args) -> None:
    keys = ["image_gb", "weights_gb", "cold_start_s", "ttft_s", "latency_s", *(f"tok_s_{n}" for n in CONCURRENCY)]
    print(f"\n| {args.size}, max_tokens {args.tokens} | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for runtime, figures in results.items():
        print(f"| {runtime} | " + " | ".join(f"{figures[k]:.2f}" for k in keys) + " |")
    for entry in (e for e in results if e.startswith("vllm:") and "vllm" in results):
        q, v = results[entry], results["vllm"]
        print(
            f"\n{entry} / vllm: tokens/s at 1: {q['tok_s_1'] / v['tok_s_1']:.2f}x, at 16: "
            f"{q['tok_s_16'] / v['tok_s_16']:.2f}x; weight layers {q['weights_gb'] / v['weights_gb']:.2f}x"
        )
    if {"packager", "vllm"} <= set(results):
        p, v = results["packager"], results["vllm"]
        print(
            f"\nvLLM / packager tokens/s at 16 concurrent: {v['tok_s_16'] / p['tok_s_16']:.2f}x; "
            f"TTFT vLLM / packager at 1: {v['ttft_s'] / p['ttft_s']:.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
