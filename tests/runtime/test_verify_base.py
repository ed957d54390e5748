"""The mounted base is checked against the lock before anything is served."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from packager.runtime.server import main
from packager.runtime.verify_base import BaseMismatch, verify_base


def _lock(tiny: dict[str, str]) -> dict:
    return json.loads(Path(tiny["lock"]).read_text())


def _mismatch(base: str, lock: dict, mode: str = "quick") -> str:
    with pytest.raises(BaseMismatch) as info:
        verify_base(base, lock, mode)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_right_base_passes(tiny: dict[str, str], mode: str) -> None:
    verify_base(tiny["base"], _lock(tiny), mode)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_other_weights_same_config_and_sizes_fail(tiny: dict[str, str], mode: str) -> None:
    weights = "model.safetensors"
    base, other = (os.path.join(tiny[k], weights) for k in ("base", "other_base"))
    assert os.path.getsize(base) == os.path.getsize(other)
    assert Path(tiny["base"], "config.json").read_bytes() == Path(tiny["other_base"], "config.json").read_bytes()
    message = _mismatch(tiny["other_base"], _lock(tiny), mode)
    assert f"the base mounted at {tiny['other_base']} is not the one in the lock" in message
    assert f"{weights} has different content" in message
    assert "llama (LlamaForCausalLM) from acme/tiny-llama" in message


def test_no_base_mounted(tiny: dict[str, str], tmp_path: Path) -> None:
    expected = "no base model mounted at {0}; mount the base the adapters were trained on (read-only) at {0}"
    missing = str(tmp_path / "base")
    assert _mismatch(missing, _lock(tiny)) == expected.format(missing)
    os.mkdir(missing)
    assert _mismatch(missing, _lock(tiny)) == expected.format(missing)


def test_missing_resized_and_edited_files(tiny: dict[str, str], base_copy: str) -> None:
    lock = _lock(tiny)
    config = Path(base_copy, "config.json")
    text = config.read_text()
    config.write_text(text.replace('"llama"', '"llamb"'))  # same size, other content: full sha256 catches it
    assert "config.json has different content (sha256" in _mismatch(base_copy, lock)
    config.write_text(text + " ")
    assert f"config.json has {len(text) + 1} bytes, the lock expects {len(text)}" in _mismatch(base_copy, lock)
    config.write_text(text)
    os.remove(os.path.join(base_copy, "tokenizer.json"))
    assert "tokenizer.json is missing" in _mismatch(base_copy, lock)


def test_mode_off_skips_with_warning(tiny: dict[str, str]) -> None:
    out = io.StringIO()
    verify_base(tiny["other_base"], _lock(tiny), "off", out=out)
    assert out.getvalue().startswith("warning: base verification is off")


def _shared_config(tmp_path: Path, tiny: dict[str, str], base: str) -> str:
    data = {"layout": "shared", "base_dir": base, "adapters": {"a": tiny["adapter_a"]}, "lock": tiny["lock"]}
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_server_refuses_wrong_base_with_exit_3(tiny: dict[str, str], tmp_path: Path) -> None:
    config = _shared_config(tmp_path, tiny, tiny["other_base"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PACKAGER_VERIFY_BASE": ""}
    cmd = [sys.executable, "-m", "packager.runtime.server", "--config", config]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the base mounted at"), proc.stderr
    assert "model.safetensors" in lines[0] and "Traceback" not in proc.stderr


def test_main_exit_codes_without_serving(
    tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACKAGER_VERIFY_BASE", raising=False)
    assert main(["--config", _shared_config(tmp_path, tiny, str(tmp_path / "nothing"))]) == 3
    assert capsys.readouterr().err.startswith("error: no base model mounted at")
    assert main(["--config", str(tmp_path / "absent.json")]) == 2
    assert capsys.readouterr().err.startswith("error: runtime config")


def test_unreadable_base_file_is_one_clear_line(tmp_path, monkeypatch) -> None:
    """A base the container user cannot read must say so, not crash with a traceback.

    The tests run as root, who reads every file, so the read is made to fail the way it does for uid 10001.
    """
    import pytest

    from packager.runtime import verify_base as module

    def denied(path: str) -> str:
        raise PermissionError(13, "Permission denied", path)

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(module, "full_sha256", denied)
    lock = {"base": {"files": [{"path": "config.json", "size": 2, "sha256": "0" * 64}]}}
    with pytest.raises(module.BaseMismatch, match=r"cannot read config.json .*chmod -R a\+rX"):
        module.verify_base(str(tmp_path), lock, "quick")
