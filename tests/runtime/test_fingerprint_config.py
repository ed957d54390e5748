"""sample_sha256 follows its documented definition; runtime.json is validated."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from packager.runtime.config import ConfigError, load_config, parse_config
from packager.runtime.fingerprint import full_sha256, sample_sha256

MIB, BLOCK = 1 << 20, 64 << 10


def _reference(data: bytes) -> str:
    """The docstring's definition, written out independently."""
    n = len(data)
    parts = [n.to_bytes(8, "little"), data[:MIB], data[max(0, n - MIB) :]]
    for i in range(64):
        offset = i * max(0, n - BLOCK) // 63
        parts.append(data[offset : offset + BLOCK])
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("size", [0, 1, 5000, 3 * MIB + 12345])
def test_sample_sha256_matches_definition(tmp_path: Path, size: int) -> None:
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    path = _write(tmp_path / "f.bin", data)
    assert sample_sha256(path) == _reference(data)
    assert full_sha256(path) == hashlib.sha256(data).hexdigest()


def test_sample_sha256_samples_large_files_but_covers_small_ones(tmp_path: Path) -> None:
    size = 8 * MIB
    data = bytearray(size)
    original = sample_sha256(_write(tmp_path / "f.bin", bytes(data)))
    gap = 40 * (size - BLOCK) // 63 + BLOCK + 100  # just past block 40, before block 41: not sampled
    data[gap] = 1
    assert sample_sha256(_write(tmp_path / "f.bin", bytes(data))) == original
    data[40 * (size - BLOCK) // 63 + 5] = 1  # inside block 40
    assert sample_sha256(_write(tmp_path / "f.bin", bytes(data))) != original
    small = bytearray(2 * MIB)
    before = sample_sha256(_write(tmp_path / "s.bin", bytes(small)))
    small[MIB - 1] = 9
    assert sample_sha256(_write(tmp_path / "s.bin", bytes(small))) != before


def test_config_shared_resolves_paths_and_env_override(tmp_path: Path) -> None:
    data = {"layout": "shared", "adapters": {"a": "ad/a", "b": "/x/b"}, "lock": "lock.json"}
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    config = load_config(str(path), env={"PACKAGER_VERIFY_BASE": "full"})
    assert config.adapters == (("a", str(tmp_path / "ad" / "a")), ("b", "/x/b"))
    assert (config.base_dir, config.lock, config.verify_base, config.port) == (
        "/base",
        str(tmp_path / "lock.json"),
        "full",
        8000,
    )
    assert config.model_names == ["a", "b"]
    assert load_config(str(path), env={}).verify_base == "quick"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"layout": "merged"}, "layout must be"),
        ({"layout": "baked", "model_dir": "/m"}, "model name None"),
        ({"layout": "baked", "model_dir": "/m", "served_name": "x", "adapters": {}}, "unknown key(s)"),
        ({"layout": "shared", "adapters": {}}, "adapters must be a non-empty"),
        ({"layout": "shared", "adapters": {"a": "/a"}}, "needs `lock`"),
        ({"layout": "shared", "adapters": {"a": "/a"}, "lock": "/l", "verify_base": "yes"}, "verify_base must"),
        ({"layout": "baked", "model_dir": "/m", "served_name": "x", "port": "80"}, "port must"),
    ],
)
def test_config_rejects_bad_input(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/", env={})
    assert needle in str(info.value)


def test_config_round_trips() -> None:
    config = parse_config({"layout": "baked", "model_dir": "/models/merged", "served_name": "my-adapter"}, "/", {})
    assert parse_config(config.to_json(), "/", {}) == config
