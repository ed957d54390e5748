"""What both entrypoints of an image do before serving (packager's server, the vLLM launcher): read the same
flags, take the port from --port, env PORT or runtime.json, check the files against a mounted signature and a
mounted base against the lock."""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError, RuntimeConfig
from .signature import check_mounted_signature
from .verify_base import load_lock, verify_base


def parse_args(prog: str, description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The entrypoint's flags: --config, --host and --port."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default="/opt/packager/runtime.json", help="runtime.json written by packager")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default: env PORT, then runtime.json)")
    return parser.parse_args(argv)


def serving_port(args: argparse.Namespace, config: RuntimeConfig) -> int:
    """--port, else env PORT (checked), else runtime.json's port."""
    return args.port or _env_port() or config.port


def _env_port() -> int | None:
    value = os.environ.get("PORT")
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"env PORT must be a port number 1-65535, got {value!r}")
    return int(value)


def check_signature(config: RuntimeConfig) -> None:
    """Before anything is loaded: the image's files against a mounted model signature (SignatureMismatch). The
    signature covers the lock, so a signed shared image checks its base through it (check_mounted_base)."""
    if check_mounted_signature(model_folders(config)):
        print("packager runtime: model files verified against the mounted signature", file=sys.stderr)


def check_mounted_base(config: RuntimeConfig) -> None:
    """Shared layout: raise BaseMismatch unless the mounted base is the lock's (verify_base mode from the config)."""
    if config.layout != "shared":
        return
    lock = load_lock(config.lock) if config.verify_base != "off" and config.lock else {}
    verify_base(config.base_dir, lock, config.verify_base)


def model_folders(config: RuntimeConfig) -> tuple[str, ...]:
    """The folders in the image that hold what is served: no file there may be unsigned."""
    folders = [config.model_dir, config.adapter_dir, *(folder for _, folder in config.adapters)]
    return tuple(sorted({f for f in folders if f and f != config.base_dir}))


def exit_code(exc: Exception, codes: dict[type[Exception], int]) -> int:
    """A start-up failure's one `error:` line on stderr, and its exit code from `codes` (by exception class)."""
    print(f"error: {exc}", file=sys.stderr)
    return next(code for kind, code in codes.items() if isinstance(exc, kind))
