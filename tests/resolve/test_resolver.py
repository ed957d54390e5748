"""Resolve: adapter and checkpoint discovery, base lookup (local, HF cache), lock file, dry run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.cli.main import main
from packager.resolve.resolver import ResolveRequest, resolve
from tests import models

QV = {"target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def training_run(bases, tmp_path_factory) -> str:
    """A trainer output folder: checkpoint-100 and checkpoint-400 hold different adapters."""
    root = tmp_path_factory.mktemp("run")
    models.save_adapter(bases["llama"], str(root / "checkpoint-100"), seed=5, **QV)
    models.save_adapter(bases["llama"], str(root / "checkpoint-400"), seed=6, r=8, **QV)
    (root / "checkpoint-400" / "optimizer.pt").write_bytes(b"not needed")
    (root / "runs").mkdir()
    return str(root)


def test_newest_checkpoint_is_taken(training_run, bases) -> None:
    plan = resolve(ResolveRequest(training_run, base=bases["llama"])).plan
    assert plan.adapter.checkpoint == 400 and plan.adapter.settings["r"] == 8


def test_chosen_checkpoint(training_run, bases) -> None:
    plan = resolve(ResolveRequest(training_run, base=bases["llama"], checkpoint=100)).plan
    assert plan.adapter.checkpoint == 100 and plan.adapter.settings["r"] == 4


def test_missing_checkpoint_lists_the_ones_found(training_run, tmp_path, capsys) -> None:
    code = main(["resolve", "--adapter", training_run, "--checkpoint", "7", "--lock", str(tmp_path / "l.json")])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint-7" in err and "100, 400" in err
    assert not (tmp_path / "l.json").exists()


def test_lock_pins_every_file_by_sha256(bases, tmp_path, capsys) -> None:
    adapter = models.save_adapter(bases["llama-sharded"], str(tmp_path / "adapter"), **QV)
    lock_path = tmp_path / "packager.lock.json"
    assert main(["resolve", "--adapter", adapter, "--base", bases["llama-sharded"], "--lock", str(lock_path)]) == 0
    lock = json.loads(lock_path.read_text())
    files = {f["path"]: f for f in lock["base"]["files"]}
    assert "model.safetensors.index.json" in files and len([n for n in files if n.endswith(".safetensors")]) > 1
    for section, root in (("base", bases["llama-sharded"]), ("adapter", adapter)):
        for entry in lock[section]["files"]:
            data = Path(root, entry["path"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    fingerprint = lock["base"]["fingerprint"]
    assert fingerprint["model_type"] == "llama" and fingerprint["hidden_size"] == 64
    assert fingerprint["num_hidden_layers"] == 2 and fingerprint["vocab_size"] == 96
    assert lock["adapter"]["settings"]["target_modules"] and lock["packager_version"]
    assert "llama" in capsys.readouterr().out


def test_merge_lock_records_base_hashes_read_while_streaming(bases, tmp_path) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), **QV)
    out = tmp_path / "out"
    assert main(["merge", "--adapter", adapter, "--base", bases["llama"], "--output", str(out), "--quiet"]) == 0
    lock = json.loads((out / "packager.lock.json").read_text())
    base_file = next(f for f in lock["base"]["files"] if f["path"] == "model.safetensors")
    expected = hashlib.sha256(Path(bases["llama"], "model.safetensors").read_bytes()).hexdigest()
    assert base_file["sha256"] == expected
    for entry in lock["output"]["files"]:
        assert entry["sha256"] == hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()


def test_base_found_in_hf_cache_offline(bases, tmp_path) -> None:
    commit = models.fake_hf_cache(tmp_path / "hf", "acme/tiny-llama", bases["llama"])
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), **QV)
    config_path = os.path.join(adapter, "adapter_config.json")
    config = json.loads(Path(config_path).read_text())
    config["base_model_name_or_path"] = "acme/tiny-llama"
    Path(config_path).write_text(json.dumps(config))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packager.cli.main",
            "resolve",
            "--adapter",
            adapter,
            "--json",
            "--lock",
            str(tmp_path / "lock.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["base"]["source"] == "hf-cache" and plan["base"]["repo_id"] == "acme/tiny-llama"
    assert plan["base"]["commit"] == commit


def test_dry_run_prints_the_plan_and_writes_nothing(bases, tmp_path, capsys) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), **QV)
    code = main(
        [
            "merge",
            "--adapter",
            adapter,
            "--base",
            bases["llama"],
            "--output",
            str(tmp_path / "out"),
            "--dry-run",
            "--json",
        ]
    )
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["merge"]["engine"] == "stream"
    assert not (tmp_path / "out").exists() and not any(n.startswith(".out") for n in os.listdir(tmp_path))


def test_local_base_wins_over_config_hint(bases, tmp_path) -> None:
    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), **QV)
    copy = str(tmp_path / "my-base")
    shutil.copytree(bases["llama"], copy)
    plan = resolve(ResolveRequest(adapter, base=copy)).plan
    assert plan.base.path == copy and plan.base.source == "local"
