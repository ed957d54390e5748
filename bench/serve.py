"""Serving benchmark: the same requests against packager's own server and vLLM, each in its baked container, and
packager's server on the kinds of model only it serves.

Model: a random Llama of CPU-realistic shape (default hidden 1024, 8 layers, 16 heads of 64, bf16; `--size 1b`
for TinyLlama-1.1B dimensions) with a LoRA, merged by packager. For each runtime: image size, cold start
(`docker run` to the first token), time to first token and latency of one streamed request, and at 1, 4, 16 and
64 concurrent requests (greedy, `max_tokens` each, streamed) the aggregate generated tokens/s and the median time
to first token. Servers listen on 127.0.0.1.

    python bench/serve.py [--size small|1b] [--tokens 32] [--runtimes packager,vllm,vllm:w8a8,vllm:fp8]
    python bench/serve.py --runtimes none --scenarios baked-lora,shared-4,prompt-tuning,adapterhub,t5

`RUNTIME:SCHEME` packages the merge quantized (`--quantize SCHEME`, a compressed-tensors checkpoint) for that
runtime: the quantized images against the unquantized one on the same model. `--scenarios` runs packager's server
on the host (the runtime package as the image runs it, `python -m packager.runtime.server`) for each model kind of
bench/serve_scenarios.py.
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench.serve_scenarios import SCENARIOS  # noqa: E402
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
PROMPTS = [f"Request {i}: tell me about packaging adapters for serving" for i in range(64)]
CONCURRENCY = (1, 4, 16, 64)


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


def streamed(url: str, model: str, prompt: str, tokens: int) -> tuple[float, int]:
    """One streamed greedy completion: (seconds to its first text, completion tokens from the usage chunk)."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    started, first, used = time.monotonic(), None, 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=1200) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0].get("text") and first is None:
                first = time.monotonic() - started
            used = (chunk.get("usage") or {}).get("completion_tokens", used)
    return first if first is not None else time.monotonic() - started, used


def throughput(url: str, concurrency: int, tokens: int, names: tuple[str, ...] = ("bench",)) -> tuple[float, float]:
    """Aggregate generated tokens/s and the median time to first token with `concurrency` streamed requests in
    flight (max(concurrency, 4) requests, each prompt once, spread over `names`)."""
    prompts = PROMPTS[: max(concurrency, 4)]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(
            pool.map(lambda i: streamed(url, names[i % len(names)], prompts[i], tokens), range(len(prompts)))
        )
    return sum(n for _, n in results) / (time.monotonic() - started), statistics.median(s for s, _ in results)


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


def levels(url: str, tokens: int, names: tuple[str, ...] = ("bench",)) -> dict:
    """Tokens/s and median time to first token at each concurrency."""
    figures = {}
    for n in CONCURRENCY:
        figures[f"tok_s_{n}"], figures[f"ttft_s_{n}"] = throughput(url, n, tokens, names)
    return figures


def measure_host(work: Path, scenario: str, base: str, adapter: str, tokens: int) -> dict:
    """packager's server for one scenario, on the host: start (to /health), then every concurrency level."""
    import os
    import subprocess

    from bench.serve_scenarios import runtime_json

    config, names = runtime_json(work, scenario, base, adapter)
    port = free_port()
    command = [sys.executable, "-m", "packager.runtime.server", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read()[-3000:] if server.stderr else "server exited")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        figures = {"start_s": time.monotonic() - started}
        streamed(url, names[0], "warm up", 2)
        return {**figures, **levels(url, tokens, tuple(names))}
    finally:
        server.terminate()
        server.wait(timeout=60)


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
        return {**figures, **levels(url, tokens)}
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each request")
    parser.add_argument("--runtimes", default="packager,vllm", help="containers to measure (none: no container)")
    parser.add_argument("--scenarios", default="", help="packager's server on the host: " + ",".join(SCENARIOS))
    parser.add_argument("--work", default=str(BENCH_DIR / "work"))
    parser.add_argument("--engine-root", default=ENGINE_ROOT, help="the Docker engine's folder (its images are reused)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores", flush=True)
    base, adapter = models(work, args.size)
    results = {}
    for scenario in filter(None, args.scenarios.split(",")):
        results[f"host:{scenario}"] = measure_host(work, scenario, base, adapter, args.tokens)
        print(scenario, json.dumps(results[f"host:{scenario}"]), flush=True)
    if args.runtimes != "none":
        results.update(measure_containers(work, args, base, adapter))
    print_table(results, args)
    (work / f"serve-{args.size}.json").write_text(json.dumps(results, indent=2))
    return 0


def cpu_model() -> str:
    """The CPU's model name, printed with every figure."""
    with open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))


def measure_containers(work: Path, args, base: str, adapter: str) -> dict:
    """Each runtime of --runtimes in its baked container."""
    local_engine.ensure_packages()
    engine = local_engine.start_engine(args.engine_root)
    import docker

    os.environ["DOCKER_HOST"] = engine.docker_host
    results = {}
    try:
        client = docker.DockerClient(base_url=engine.docker_host, timeout=900)
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
    finally:
        local_engine.stop_engine(engine)
    return results


def print_table(results: dict, args) -> None:
    """Markdown tables: throughput and time to first token per concurrency, then the ratios the issues ask."""
    levels_ = [f"tok_s_{n}" for n in CONCURRENCY] + [f"ttft_s_{n}" for n in CONCURRENCY]
    print(f"\n| {args.size}, max_tokens {args.tokens} | " + " | ".join(levels_) + " | tok/s 16 / 1 |")
    print("|---" * (len(levels_) + 2) + "|")
    for runtime, figures in results.items():
        ratio = figures["tok_s_16"] / figures["tok_s_1"]
        print(f"| {runtime} | " + " | ".join(f"{figures[k]:.2f}" for k in levels_) + f" | {ratio:.2f} |")
    containers = {r: f for r, f in results.items() if "image_gb" in f}
    if containers:
        keys = ["image_gb", "weights_gb", "cold_start_s", "ttft_s", "latency_s"]
        print("\n| runtime | " + " | ".join(keys) + " |\n" + "|---" * (len(keys) + 1) + "|")
        for runtime, figures in containers.items():
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
            f"\nvLLM / packager tokens/s at 16 concurrent: {v['tok_s_16'] / p['tok_s_16']:.2f}x, at 64: "
            f"{v['tok_s_64'] / p['tok_s_64']:.2f}x; TTFT vLLM / packager at 1: {v['ttft_s'] / p['ttft_s']:.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
