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


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)
