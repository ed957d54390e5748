"""A private Docker engine and local registries on 127.0.0.1, started and stopped by PID.

Stdlib only. The engine changes nothing in the host network (no bridge, no iptables); builds and runs
against it need network_mode "none". CLI: ``python scripts/local_engine.py up|down|status [--root DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_ROOT = "/var/tmp/packager-engine"
AUTH_USER = "packager"
# binary -> Debian package that provides it
REQUIRED_BINARIES = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
    "htpasswd": "apache2-utils",
    "buildah": "buildah",
    "skopeo": "skopeo",
    "busybox": "busybox-static",  # the runnable layer of base-model images (package-base)
    "docker-compose": "docker-compose",  # `docker-compose config -q` validates rendered compose files (1.29)
}
ENGINE_START_TIMEOUT = 30.0
ENGINE_STOP_TIMEOUT = 20.0
REGISTRY_START_TIMEOUT = 15.0


@dataclass
class Engine:
    """A running dockerd: where clients connect, its PID and its root directory."""

    docker_host: str
    pid: int
    root: str


@dataclass
class Registry:
    """A running docker-registry on 127.0.0.1 (url is host:port, no scheme)."""

    url: str
    pid: int
    root: str
    username: str | None = None
    password: str | None = None


def log(msg: str) -> None:
    """Progress output goes to stderr so stdout stays machine-readable."""
    print(f"[local_engine] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- packages


def _which(binary: str) -> str | None:
    """Find a binary on PATH or in the sbin folders root's PATH may lack."""
    extra = "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=f"{os.environ.get('PATH', '')}:{extra}")


def ensure_packages() -> None:
    """apt-get install the Debian packages whose binaries are missing (apt-get update once first)."""
    missing = sorted({pkg for binary, pkg in REQUIRED_BINARIES.items() if _which(binary) is None})
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=sys.stderr)


# ---------------------------------------------------------------- processes


def pid_alive(pid: int | None) -> bool:
    """True if PID runs and is not a zombie; reaps it first if it is our own exited child."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pid_name(pid: int) -> str:
    """The process's command name, or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM the PID, wait up to timeout seconds, then SIGKILL and wait for it to exit."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if pid_alive(pid):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def _read_pid(path: Path) -> int | None:
    """The integer in a pidfile, or None."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start a detached background process whose output goes to log_path."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def umount_under(path: Path) -> None:
    """Unmount every mount point at or below path, deepest first (lazily if busy): packager's own."""
    from packager.image.runtime_build import umount_under as unmount

    unmount(path)


# ---------------------------------------------------------------- engine


def _engine_paths(root: Path) -> dict[str, Path]:
    """Where one engine keeps its data, runtime state, socket, pidfile and log."""
    return {
        "data": root / "data",
        "exec": root / "exec",
        "sock": root / "docker.sock",
        "pidfile": root / "docker.pid",
        "log": root / "dockerd.log",
    }


def _unix_http_status(sock_path: Path, path: str, timeout: float = 2.0) -> int | None:
    """Status code of a GET over a unix socket, or None if nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            head = s.recv(64).decode("latin-1")
    except OSError:
        return None
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def engine_answers(docker_host: str) -> bool:
    """True if the engine at unix://PATH answers /_ping with 200."""
    return _unix_http_status(Path(docker_host.removeprefix("unix://")), "/_ping") == 200


def _running_engine(root: Path) -> Engine | None:
    """The engine already started from root, if its pidfile names a live dockerd that answers."""
    paths = _engine_paths(root)
    pid = _read_pid(paths["pidfile"])
    host = f"unix://{paths['sock']}"
    if pid and pid_alive(pid) and _pid_name(pid) == "dockerd" and engine_answers(host):
        return Engine(docker_host=host, pid=pid, root=str(root))
    return None


def _dockerd_cmd(paths: dict[str, Path], driver: str) -> list[str]:
    """The dockerd command line: private paths, no host network changes."""
    return [
        _which("dockerd") or "dockerd",
        f"--data-root={paths['data']}",
        f"--exec-root={paths['exec']}",
        f"--pidfile={paths['pidfile']}",
        f"-H=unix://{paths['sock']}",
        f"--storage-driver={driver}",
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]


def _wait_engine(proc: subprocess.Popen, host: str, timeout: float) -> bool:
    """Wait until the engine answers (True) or its process exits (False); raise on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_answers(host):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    terminate(proc.pid, 5.0)
    raise TimeoutError(f"dockerd did not answer within {timeout:.0f} s")


def start_engine(root: str = DEFAULT_ROOT) -> Engine:
    """Start dockerd under root (overlay2, else vfs) or reuse the live one started from there."""
    root_path = Path(root).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    if running := _running_engine(root_path):
        log(f"reusing engine pid {running.pid} at {running.docker_host}")
        return running
    paths = _engine_paths(root_path)
    paths["sock"].unlink(missing_ok=True)
    paths["pidfile"].unlink(missing_ok=True)
    host = f"unix://{paths['sock']}"
    for driver in ("overlay2", "vfs"):
        with open(paths["log"], "a") as f:
            f.write(f"\n=== starting dockerd ({driver}) at {time.ctime()} ===\n")
        proc = _spawn(_dockerd_cmd(paths, driver), paths["log"])
        try:
            ready = _wait_engine(proc, host, ENGINE_START_TIMEOUT)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; log tail:\n{_log_tail(paths['log'])}") from exc
        if ready:
            log(f"engine up: pid {proc.pid}, storage {driver}, {host}")
            return Engine(docker_host=host, pid=proc.pid, root=str(root_path))
        log(f"dockerd exited with storage driver {driver}")
    raise RuntimeError(f"dockerd failed to start; log tail:\n{_log_tail(paths['log'])}")


def stop_engine(engine: Engine) -> None:
    """Stop dockerd by PID (and a containerd it left), unmount leftovers, remove socket and pidfile."""
    root = Path(engine.root)
    paths = _engine_paths(root)
    containerd_pid = _read_pid(paths["exec"] / "containerd" / "containerd.pid")
    if pid_alive(engine.pid) and _pid_name(engine.pid) == "dockerd":
        terminate(engine.pid, ENGINE_STOP_TIMEOUT)
    if containerd_pid and pid_alive(containerd_pid) and _pid_name(containerd_pid) == "containerd":
        terminate(containerd_pid, 10.0)
    umount_under(paths["exec"])
    if (paths["data"]).exists():
        umount_under(paths["data"])
    paths["sock"].unlink(missing_ok=True)
    paths["pidfile"].unlink(missing_ok=True)
    log(f"engine pid {engine.pid} stopped")


# ---------------------------------------------------------------- registry


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_status(url: str, username: str | None = None, password: str | None = None) -> int | None:
    """HTTP status of GET http://URL/v2/ (with basic auth when given), or None if nothing answers."""
    req = urllib.request.Request(f"http://{url}/v2/")
    if username is not None:
        token = b64encode(f"{username}:{password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def registry_healthy(reg: Registry) -> bool:
    """True if the registry's own process is alive and /v2/ answers as its auth setting implies."""
    if not (pid_alive(reg.pid) and _pid_name(reg.pid) == "docker-registry"):
        return False
    if reg.username is None:
        return registry_status(reg.url) == 200
    return registry_status(reg.url) == 401 and registry_status(reg.url, reg.username, reg.password) == 200


def _write_registry_config(root: Path, port: int, htpasswd: Path | None) -> Path:
    """Write the registry's YAML config (127.0.0.1 only, filesystem storage) and return its path."""
    lines = [
        "version: 0.1",
        "log: {level: warn}",
        f"http: {{addr: 127.0.0.1:{port}}}",
        f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}, delete: {{enabled: true}}}}",
    ]
    if htpasswd is not None:
        lines.append(f"auth: {{htpasswd: {{realm: packager, path: {htpasswd}}}}}")
    config = root / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    return config


def _write_htpasswd(root: Path, username: str, password: str) -> Path:
    """Write a bcrypt htpasswd file (password passed on stdin, not argv)."""
    path = root / "htpasswd"
    cmd = [_which("htpasswd") or "htpasswd", "-B", "-c", "-i", str(path), username]
    subprocess.run(cmd, input=password.encode(), check=True, capture_output=True)
    path.chmod(0o600)
    return path


def _wait_registry(proc: subprocess.Popen, reg: Registry, log_path: Path) -> None:
    """Wait until the registry answers as expected; raise with its log tail if it dies or times out."""
    deadline = time.monotonic() + REGISTRY_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({proc.returncode}); log tail:\n{_log_tail(log_path)}")
        if registry_healthy(reg):
            return
        time.sleep(0.1)
    terminate(proc.pid, 5.0)
    raise RuntimeError(f"docker-registry did not answer on {reg.url}; log tail:\n{_log_tail(log_path)}")


def start_registry(
    root: str, port: int | None = None, username: str | None = None, password: str | None = None
) -> Registry:
    """Start docker-registry on 127.0.0.1 (htpasswd auth when credentials are given), storing under root."""
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    root_path = Path(root).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if not port_free(port):
        raise RuntimeError(f"127.0.0.1:{port} is already in use")
    htpasswd = _write_htpasswd(root_path, username, password) if username and password else None
    config = _write_registry_config(root_path, port, htpasswd)
    log_path = root_path / "registry.log"
    proc = _spawn([_which("docker-registry") or "docker-registry", "serve", str(config)], log_path)
    reg = Registry(f"127.0.0.1:{port}", proc.pid, str(root_path), username, password)
    _wait_registry(proc, reg, log_path)
    (root_path / "registry.pid").write_text(f"{proc.pid}\n")
    log(f"registry up: pid {proc.pid} at {reg.url}{' (htpasswd auth)' if username else ''}")
    return reg


def stop_registry(registry: Registry) -> None:
    """Stop the registry by PID and wait for it to exit."""
    if pid_alive(registry.pid) and _pid_name(registry.pid) == "docker-registry":
        terminate(registry.pid, 10.0)
    (Path(registry.root) / "registry.pid").unlink(missing_ok=True)
    log(f"registry pid {registry.pid} stopped")


# ---------------------------------------------------------------- state + CLI


def _state_path(root: str) -> Path:
    """Where the CLI records what it started under root."""
    return Path(root).resolve() / "state.json"


def load_state(root: str = DEFAULT_ROOT) -> dict | None:
    """The recorded engine and registries, as dataclasses, or None if nothing was recorded."""
    try:
        raw = json.loads(_state_path(root).read_text())
    except (OSError, ValueError):
        return None
    return {
        "engine": Engine(**raw["engine"]) if raw.get("engine") else None,
        "registry": Registry(**raw["registry"]) if raw.get("registry") else None,
        "auth_registry": Registry(**raw["auth_registry"]) if raw.get("auth_registry") else None,
    }


def save_state(root: str, state: dict) -> None:
    """Write the state file (mode 600: it holds the auth registry's password)."""
    path = _state_path(root)
    raw = {key: asdict(value) if value else None for key, value in state.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def export_lines(state: dict) -> list[str]:
    """Shell export lines for the recorded engine and registries."""
    auth = state["auth_registry"]
    values = {
        "DOCKER_HOST": state["engine"].docker_host,
        "PACKAGER_REGISTRY": state["registry"].url,
        "PACKAGER_AUTH_REGISTRY": auth.url,
        "PACKAGER_AUTH_USER": auth.username,
        "PACKAGER_AUTH_PASSWORD": auth.password,
    }
    return [f"export {key}={shlex.quote(str(value))}" for key, value in values.items()]


def _ensure_registry(old: Registry | None, root: Path, auth: bool) -> Registry:
    """Reuse a healthy recorded registry, else stop the stale one and start a fresh one."""
    if old and registry_healthy(old):
        log(f"reusing registry pid {old.pid} at {old.url}")
        return old
    if old:
        stop_registry(old)
    if auth:
        return start_registry(str(root / "registry-auth"), username=AUTH_USER, password=secrets.token_urlsafe(18))
    return start_registry(str(root / "registry"))


def up(root: str = DEFAULT_ROOT) -> dict:
    """Start (or reuse) the engine and both registries, record them, and return the state."""
    ensure_packages()
    old = load_state(root) or {"engine": None, "registry": None, "auth_registry": None}
    root_path = Path(root).resolve()
    t0 = time.monotonic()
    state = {"engine": start_engine(str(root_path))}
    log(f"engine ready in {time.monotonic() - t0:.1f} s")
    save_state(root, {**old, **state})
    state["registry"] = _ensure_registry(old["registry"], root_path, auth=False)
    save_state(root, {**old, **state})
    state["auth_registry"] = _ensure_registry(old["auth_registry"], root_path, auth=True)
    save_state(root, state)
    return state


def down(root: str = DEFAULT_ROOT) -> None:
    """Stop everything the state file records, by PID, and clear the state file."""
    state = load_state(root)
    if state is None:
        log("nothing recorded; nothing to stop")
        return
    for key in ("auth_registry", "registry"):
        if state[key]:
            stop_registry(state[key])
    if state["engine"]:
        stop_engine(state["engine"])
    _state_path(root).unlink(missing_ok=True)


def status(root: str = DEFAULT_ROOT) -> dict:
    """Whether each recorded part is alive and answering."""
    state = load_state(root)
    if state is None:
        return {"recorded": False, "healthy": False}
    engine, reg, auth = state["engine"], state["registry"], state["auth_registry"]
    info = {
        "engine": engine and {**asdict(engine), "alive": pid_alive(engine.pid) and engine_answers(engine.docker_host)},
        "registry": reg and {"pid": reg.pid, "url": reg.url, "alive": registry_healthy(reg)},
        "auth_registry": auth and {"pid": auth.pid, "url": auth.url, "alive": registry_healthy(auth)},
    }
    return {"recorded": True, "healthy": all(part and part["alive"] for part in info.values()), **info}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: up prints export lines on stdout; down stops; status prints JSON (exit 1 if unhealthy)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--root", default=os.environ.get("PACKAGER_ENGINE_ROOT", DEFAULT_ROOT))
    args = parser.parse_args(argv)
    if args.command == "up":
        print("\n".join(export_lines(up(args.root))))
    elif args.command == "down":
        down(args.root)
    else:
        info = status(args.root)
        print(json.dumps(info, indent=2))
        return 0 if info["healthy"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
