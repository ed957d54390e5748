"""Helpers to run an image and talk to the server inside it (containers run with --network none)."""

from __future__ import annotations

import json
import os
import time

REQUEST_SCRIPT = """
import json, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1], data=sys.argv[2].encode() or None,
                             headers={"Content-Type": "application/json"})
try:
    print(urllib.request.urlopen(req, timeout=60).read().decode())
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""


def start(client, image: str, base_dir: str | None = None, **options):
    volumes = {base_dir: {"bind": "/base", "mode": "ro"}} if base_dir else None
    return client.containers.run(image, detach=True, network_mode="none", volumes=volumes, **options)


def wait_healthy(container, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"container exited: {container.logs().decode()[-2000:]}")
        code, _ = container.exec_run(["python3", "-c", REQUEST_SCRIPT, "/health", ""])
        if code == 0:
            return
        time.sleep(1)
    raise AssertionError(f"server not healthy in {timeout}s: {container.logs().decode()[-2000:]}")


def call(container, path: str, body: dict | None = None) -> dict:
    code, output = container.exec_run(["python3", "-c", REQUEST_SCRIPT, path, json.dumps(body) if body else ""])
    assert code == 0, output.decode()
    return json.loads(output.decode())


def wait_exit(container, timeout: float = 120) -> int:
    return int(container.wait(timeout=timeout)["StatusCode"])


def exit_and_errors(container) -> tuple[int, list[str]]:
    """Wait for a started container to exit, remove it: (exit code, its log's `error:` lines)."""
    try:
        code = wait_exit(container)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    return code, [line for line in logs.splitlines() if line.startswith("error:")]


def run_to_exit(client, image: str, base_dir: str | None = None, **options) -> tuple[int, str, list[str]]:
    """Start the image, wait for it to exit, remove it: (exit code, its log, the log's `error:` lines)."""
    container = start(client, image, base_dir, **options)
    try:
        code = wait_exit(container)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    return code, logs, [line for line in logs.splitlines() if line.startswith("error:")]


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def serve_on_host(client, image: str, base_dir: str | None = None, **options):
    """Run the image on the host's network, its server bound to 127.0.0.1 on a free port; returns (container, url)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    volumes = {base_dir: {"bind": "/base", "mode": "ro"}} if base_dir else None
    container = client.containers.run(
        image,
        ["--host", "127.0.0.1", "--port", str(port)],
        detach=True,
        network_mode="host",
        volumes=volumes,
        **options,
    )
    return container, f"http://127.0.0.1:{port}"


def wait_http(url: str, container, timeout: float = 400) -> None:
    """Poll /health from the host until the server answers (or the container exits)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        assert container.status != "exited", container.logs().decode()[-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"server not healthy in {timeout}s")


def check_openai_client(url: str, model: str, prompt: str, tokens: int) -> None:
    """Through the `openai` client: streamed text equals unstreamed (completion and chat), four requests at once
    answer as one alone does, and a request longer than the context is a 400."""
    from concurrent.futures import ThreadPoolExecutor

    import openai
    import pytest

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=300)
    plain = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    text = client.completions.create(**plain).choices[0].text
    assert text and "".join(c.choices[0].text for c in client.completions.create(**plain, stream=True)) == text
    chat = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": tokens, "temperature": 0}
    whole = client.chat.completions.create(**chat).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**chat, stream=True))
    assert streamed == whole  # a random model may answer a chat with nothing; the completion above may not
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.completions.create(**plain).choices[0].text, range(4)))
    assert answers == [text] * 4
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt=prompt, max_tokens=100_000)


API_KEY = "sk-e2e-0123456789"
# what a restricted pod gives a container (Pod Security Standards, restricted; the manifests' securityContext):
# a read-only root filesystem with /tmp writable, no capabilities, no privilege escalation
LOCKED_DOWN = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=512m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "environment": {"PACKAGER_API_KEY": API_KEY},
}


def check_api_key(url: str, model: str) -> None:
    """Through the `openai` client: 401 without the key or with another, an answer with it; /health stays open."""
    import httpx
    import openai
    import pytest

    for wrong in ("not-the-key", ""):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=wrong or "unset", max_retries=0, timeout=120)
        with pytest.raises(openai.AuthenticationError):
            client.completions.create(model=model, prompt="Hello", max_tokens=2, temperature=0)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
    assert client.completions.create(model=model, prompt="Hello", max_tokens=2, temperature=0).choices[0].text
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200


def runtime_json(context: str) -> dict:
    """The runtime.json a rendered build context puts into its image."""
    with open(os.path.join(context, "config", "opt", "packager", "runtime.json")) as f:
        return json.load(f)
