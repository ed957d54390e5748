"""sha256 pinning: the background hasher the CLI starts while torch imports, and how the merge uses it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from packager.formats.folders import local_base_weight_paths, parse_adapter_arg
from packager.io.hashing import AheadHasher, claim, hash_ahead, remember, settle, stop_hashing_ahead
from tests import models

QV = {"target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(autouse=True)
def _no_hasher_left_behind():
    yield
    stop_hashing_ahead()


def _files(tmp_path: Path, count: int, size: int = 3 << 20) -> list[str]:
    paths = []
    for index in range(count):
        path = tmp_path / f"model-{index:05d}.safetensors"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    return paths


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_files_hashed_ahead_give_their_true_digests(tmp_path) -> None:
    paths = _files(tmp_path, 3)
    hasher = hash_ahead(paths, lead=len(paths))
    _wait_until(lambda: len(hasher.finished()) == len(paths))
    for path in paths:
        pending = claim(path)
        assert pending is not None
        assert settle(path, pending) == _sha256(path)


def test_hasher_stays_within_its_lead_of_the_reader(tmp_path) -> None:
    paths = [os.path.realpath(p) for p in _files(tmp_path, 4)]
    hasher = AheadHasher(paths, lead=1)
    _wait_until(lambda: hasher.started() == paths[:1])
    time.sleep(0.3)  # it may hash file 0 (one ahead of nothing claimed), and must wait there
    assert hasher.started() == paths[:1]
    assert hasher.claim(paths[0]).result()[1] == _sha256(paths[0])
    _wait_until(lambda: len(hasher.started()) == 2)
    time.sleep(0.3)
    assert hasher.started() == paths[:2]
    hasher.close()


def test_a_file_the_reader_reaches_first_is_left_to_the_reader(tmp_path) -> None:
    paths = [os.path.realpath(p) for p in _files(tmp_path, 3)]
    hasher = AheadHasher(paths, lead=1)
    _wait_until(lambda: hasher.started() == paths[:1])
    assert hasher.claim(paths[2]) is None  # the reader skipped ahead: it hashes file 2 itself
    _wait_until(lambda: len(hasher.started()) == 2)
    time.sleep(0.3)
    assert hasher.started() == paths[:2]
    assert settle(paths[1], hasher.claim(paths[1])) == _sha256(paths[1])
    hasher.close()


def test_a_file_changed_after_hashing_is_hashed_again(tmp_path) -> None:
    [path] = _files(tmp_path, 1)
    hasher = hash_ahead([path])
    _wait_until(lambda: len(hasher.finished()) == 1)
    pending = claim(path)
    first = pending.result()
    Path(path).write_bytes(os.urandom(1 << 20))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert first[1] != _sha256(path)
    assert settle(path, pending) == _sha256(path)


def test_a_remembered_digest_is_used_while_the_file_is_unchanged(tmp_path) -> None:
    [path] = _files(tmp_path, 1)
    remember(path, "ab" * 32)
    assert settle(path, claim(path)) == "ab" * 32
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert claim(path) is None  # a touched file is not trusted


def test_hasher_reports_a_vanished_file_as_unknown(tmp_path) -> None:
    paths = _files(tmp_path, 2)
    os.remove(paths[0])
    hasher = AheadHasher(paths)
    _wait_until(lambda: len(hasher.finished()) == len(paths))
    pending = hasher.claim(paths[0])
    assert pending is not None and pending.result() is None
    assert settle(paths[1], hasher.claim(paths[1])) == _sha256(paths[1])
    hasher.close()


def test_guess_of_base_weight_files(bases, tmp_path) -> None:
    base = bases["llama-sharded"]
    adapter = models.save_adapter(base, str(tmp_path / "run" / "checkpoint-5"), **QV)
    shards = json.loads(Path(base, "model.safetensors.index.json").read_text())["weight_map"].values()
    expected = [os.path.join(base, name) for name in sorted(set(shards))]
    assert len(expected) > 1
    assert local_base_weight_paths(str(tmp_path / "run"), None) == expected  # newest checkpoint's config
    assert local_base_weight_paths(adapter, base) == expected
    assert local_base_weight_paths(adapter, "org/not-a-folder") == []
    assert local_base_weight_paths(str(tmp_path / "missing"), None) == []
    assert parse_adapter_arg(f"name={adapter}") == ("name", adapter)


@pytest.fixture
def hashed_inline(monkeypatch) -> list[bool]:
    """For each base file the merge reads: whether the reader hashed its bytes itself."""
    from packager.io.reader import SafetensorsShard

    calls: list[bool] = []
    original = SafetensorsShard.iter_tensors

    def spy(self, pipeline=None, hash_bytes=True):
        calls.append(hash_bytes)
        return original(self, pipeline, hash_bytes)

    monkeypatch.setattr(SafetensorsShard, "iter_tensors", spy)
    return calls


def test_merge_hashes_what_it_reads_when_nothing_was_hashed_ahead(bases, tmp_path, monkeypatch, hashed_inline) -> None:
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest

    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "empty-cache"))  # other tests remembered this base
    base = bases["llama-sharded"]
    adapter = models.save_adapter(base, str(tmp_path / "adapter"), **QV)
    outcome = run_merge(ResolveRequest(adapter, base, hash_base=False), str(tmp_path / "out"), verify=False, quiet=True)
    paths = local_base_weight_paths(adapter, base)
    assert hashed_inline == [True] * len(paths)
    locked = {f.path: f.sha256 for f in outcome.result.plan.base.files}
    assert all(locked[os.path.basename(p)] == _sha256(p) for p in paths)


def test_merge_reads_without_hashing_what_was_hashed_ahead(bases, tmp_path, hashed_inline) -> None:
    """The merge trusts the background digests (and records them), and re-hashes a file changed since."""
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest

    base = shutil.copytree(bases["llama-sharded"], tmp_path / "base")
    adapter = models.save_adapter(str(base), str(tmp_path / "adapter"), **QV)
    paths = local_base_weight_paths(adapter, str(base))
    changed = paths[1]
    hasher = hash_ahead(paths, lead=len(paths))
    _wait_until(lambda: len(hasher.finished()) == len(paths))
    with open(changed, "r+b") as f:  # same size, different bytes, newer mtime
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    outcome = run_merge(
        ResolveRequest(adapter, str(base), hash_base=False), str(tmp_path / "out"), verify=False, quiet=True
    )

    assert hashed_inline == [False] * len(paths)
    locked = {f.path: f.sha256 for f in outcome.result.plan.base.files}
    for path in paths:
        assert locked[os.path.basename(path)] == _sha256(path)


def test_base_digests_are_of_the_bytes_read_even_when_hashing_lags(bases, tmp_path, monkeypatch) -> None:
    """The merge must not change a read buffer whose bytes are still queued for hashing (a slow hash lane is
    simulated by delaying each hash task; the result must not depend on it)."""
    from packager.io.pipeline import Pipeline
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest

    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "empty-cache"))
    base = bases["llama-sharded"]
    adapter = models.save_adapter(base, str(tmp_path / "adapter"), target_modules="all-linear")
    original = Pipeline.submit

    def slow_submit(self, fn, *args):
        return original(self, lambda *a: (time.sleep(0.005), fn(*a))[1], *args)

    monkeypatch.setattr(Pipeline, "submit", slow_submit)
    outcome = run_merge(ResolveRequest(adapter, base, hash_base=False), str(tmp_path / "out"), verify=False, quiet=True)
    locked = {f.path: f.sha256 for f in outcome.result.plan.base.files}
    for path in local_base_weight_paths(adapter, base):
        assert locked[os.path.basename(path)] == _sha256(path)
    expected = models.peft_merged_state(base, adapter, torch.float32)
    models.assert_states_equal(expected, models.saved_tensors(str(tmp_path / "out")))
