"""Embeddings and classifier images: vLLM's pooling runner against packager's own server, on the same machine in
one run (issue 18, item 9; issue 26). The real all-MiniLM-L6-v2 with a LoRA (embeddings), and the same base with
a LoRA and a 3-label head (a classifier), each packaged baked with --runtime vllm, --runtime packager, and for the
embeddings --runtime packager --export onnx --quantize int8; requests of one sentence each, 64 per round, at 1, 16
and 64 concurrent clients; the median of 3 rounds.

    python bench/serve_encoders.py [--work bench/work] [--engine-root /var/tmp/packager-engine]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import docker  # noqa: E402
import httpx  # noqa: E402

from packager.artefact.spec import artefact_spec  # noqa: E402
from packager.package import package  # noqa: E402
from scripts import base_image, local_engine  # noqa: E402
from tests import families  # noqa: E402
from tests.requests import package_request  # noqa: E402

ENGINE_ROOT = "/var/tmp/packager-engine"
REQUESTS = 64
CONCURRENCY = (1, 16, 64)
SENTENCES = [f"Sentence {i}: a container serves the merged model to whoever asks for embeddings." for i in range(64)]


def classifier_adapter(path: str) -> str:
    """A LoRA on MiniLM in the classifier's class, with a trained-looking 3-label head."""
    from peft import LoraConfig

    config = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"])
    return families.save_task_adapter(families.minilm_base(), path, "SEQ_CLS", config, num_labels=3)


def serve(client, image: str, shm: bool) -> tuple[object, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"shm_size": "1g"} if shm else {}
    container = client.containers.run(
        image, ["--host", "127.0.0.1", "--port", str(port)], detach=True, network_mode="host", **options
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return container, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    container.remove(force=True)
    raise RuntimeError(f"{image} did not become healthy")


def rate(url: str, route: str, model: str, clients: int) -> float:
    """Requests (one sentence each) per second at `clients` concurrent clients, median of 3 rounds. The clients
    are keep-alive connections on one asyncio thread: on 2 cores a thread per client (httpx) took CPU the server
    needed, and the figures measured the load generator as much as the server."""
    bodies = [json.dumps({"model": model, "input": text}).encode() for text in SENTENCES[:REQUESTS]]
    host, port = url.split("//")[1].split(":")
    asyncio.run(_round(host, int(port), route, bodies[:1], 1))  # warm up
    return statistics.median(asyncio.run(_round(host, int(port), route, bodies, clients)) for _ in range(3))


async def _round(host: str, port: int, route: str, bodies: list[bytes], clients: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, port, route, queue) for _ in range(clients)))
    return len(bodies) / (time.perf_counter() - started)


async def _client(host: str, port: int, route: str, queue: asyncio.Queue[bytes]) -> None:
    """One connection posting bodies from the queue until it is empty; any status but 200 fails the run."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while not queue.empty():
            body = queue.get_nowait()
            head = f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            response = await reader.readuntil(b"\r\n\r\n")
            status = int(response.split(b" ", 2)[1])
            length = next(
                int(h.split(b":")[1]) for h in response.split(b"\r\n") if h.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status} from {route}")
    finally:
        writer.close()


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "bench" / "work" / "serve-encoders"))
    parser.add_argument("--engine-root", default=ENGINE_ROOT)
    args = parser.parse_args()
    work = Path(args.work)
    engine = local_engine.start_engine(args.engine_root)
    os.environ["DOCKER_HOST"] = engine.docker_host
    client = docker.DockerClient(base_url=engine.docker_host, timeout=900)
    adapters = {
        "embeddings": (families.save_minilm_adapter(str(work / "minilm-lora")), "/v1/embeddings"),
        "classifier": (classifier_adapter(str(work / "minilm-cls")), "/classify"),
    }
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores", flush=True)
    header = " | ".join(f"requests/s, {n} client{'s' * (n > 1)}" for n in CONCURRENCY)
    print(f"| model | engine | {header} |\n|---|---|" + "---:|" * len(CONCURRENCY), flush=True)
    for kind, (adapter, route) in adapters.items():
        for engine_name in ("vllm", "packager", "packager-onnx-int8")[: 3 if kind == "embeddings" else 2]:
            runtime = engine_name.split("-")[0]
            image = base_image.ensure_base_image(engine.docker_host, runtime)
            artefact = artefact_spec("int8", "onnx") if "onnx" in engine_name else artefact_spec()
            request = package_request(
                (("m", adapter),), "baked", image, f"bench/{kind}-{engine_name}:1", base=families.minilm_base(),
                work=str(work / f"{kind}-{engine_name}"), quiet=True, builder="docker", runtime=runtime, verify=False,
                artefact=artefact,
            )  # fmt: skip
            report = package(request, log=lambda _l: None)
            container, url = serve(client, report.image, shm=runtime == "vllm")
            try:
                rates = [rate(url, route, "m", clients) for clients in CONCURRENCY]
            finally:
                container.remove(force=True)
            print(f"| {kind} | {engine_name} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)
    print(json.dumps({"requests": REQUESTS, "concurrency": CONCURRENCY}))


if __name__ == "__main__":
    main()
