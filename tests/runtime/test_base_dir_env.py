"""PACKAGER_BASE_DIR moves a shared image's base (KServe mounts it at /mnt/models), like PACKAGER_VERIFY_BASE
overrides verify_base; without it runtime.json's base_dir stands."""

from __future__ import annotations

import json
from pathlib import Path

from packager.runtime.config import load_config

SHARED = {"layout": "shared", "base_dir": "/base", "adapters": {"sql": "/adapters/sql"}, "lock": "/opt/lock.json"}


def _write(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_env_overrides_base_dir(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SHARED), env={"PACKAGER_BASE_DIR": "/mnt/models"})
    assert config.base_dir == "/mnt/models"
    assert config.adapters == (("sql", "/adapters/sql"),) and config.lock == "/opt/lock.json"


def test_without_the_env_var_the_file_decides(tmp_path: Path) -> None:
    path = _write(tmp_path, SHARED)
    assert load_config(path, env={}).base_dir == "/base"
    assert load_config(path, env={"PACKAGER_VERIFY_BASE": "full"}).base_dir == "/base"
    assert load_config(path, env={"PACKAGER_BASE_DIR": ""}).base_dir == "/base"  # set but empty: ignored


def test_env_overrides_the_default_base_dir_too(tmp_path: Path) -> None:
    data = {k: v for k, v in SHARED.items() if k != "base_dir"}
    path = _write(tmp_path, data)
    assert load_config(path, env={}).base_dir == "/base"
    assert load_config(path, env={"PACKAGER_BASE_DIR": "/mnt/models"}).base_dir == "/mnt/models"


def test_both_overrides_apply_together(tmp_path: Path) -> None:
    env = {"PACKAGER_BASE_DIR": "/mnt/models", "PACKAGER_VERIFY_BASE": "off"}
    config = load_config(_write(tmp_path, SHARED), env=env)
    assert (config.base_dir, config.verify_base) == ("/mnt/models", "off")


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PACKAGER_BASE_DIR", "/mnt/models")
    assert load_config(_write(tmp_path, SHARED)).base_dir == "/mnt/models"
    monkeypatch.delenv("PACKAGER_BASE_DIR")
    assert load_config(_write(tmp_path, SHARED)).base_dir == "/base"


def test_a_baked_config_ignores_it(tmp_path: Path) -> None:
    data = {"layout": "baked", "model_dir": "/models/merged", "served_name": "demo"}
    config = load_config(_write(tmp_path, data), env={"PACKAGER_BASE_DIR": "/mnt/models"})
    assert config.model_dir == "/models/merged" and config.layout == "baked" and config.base_dir != "/mnt/models"
