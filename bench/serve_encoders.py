"""Embeddings and classifier images: vLLM's pooling runner against packager's own server, on the same machine in
one run (issue 18, item 9; issue 26). The real all-MiniLM-L6-v2 with a LoRA (embeddings), and the same base with
a LoRA and a 3-label head (a classifier), each packaged baked with --runtime vllm, --runtime packager, and for the
embeddings --runtime packager --export onnx --quantize int8; requests of one sentence each, 64 per round, at 1, 16
and 64 concurrent clients; the median of 3 rounds.

    python bench/serve_encoders.py [--work bench/work] [--engine-root /var/tmp/packager-engine]
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
    """Requests (one sentence each) per second at `clients` concurrent clients, median of 3 rounds."""
    bodies = [{"model": model, "input": text} for text in SENTENCES[:REQUESTS]]
    rounds = []
    with httpx.Client(timeout=300) as http:
        http.post(f"{url}{route}", json=bodies[0]).raise_for_status()  # warm up
        for _ in range(3):
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda b: http.post(f"{url}{route}", json=b).raise_for_status(), bodies))
            rounds.append(len(bodies) / (time.perf_counter() - started))
    return statistics.median(rounds)


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
