"""A weight file above the layer cap is split at tensor boundaries: every tensor's bytes unchanged, the folder
loads as the same model, each layer fits, and a shared image of an adapter on the original base checks the mounted
base against the split files (and refuses the unsplit folder)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from packager.errors import UserInputError
from packager.lock import plan_lock
from packager.model_image.make import BaseImageRequest, plan_base_image
from packager.model_image.reshard import plan_splits, planned_base, write_split_base
from packager.plan import FileEntry, files_key
from packager.planning.job import plan_package
from packager.planning.model_images import ModelImageRecord, remember_model_image
from packager.resolve.resolver import resolve_base
from packager.runtime.verify_base import BaseMismatch, verify_base
from tests.requests import package_request

CAP = 200_000  # the demo base's one weight file is ~0.5 MB: three parts


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, str]:
    from packager.demo import build_demo

    base, adapter = build_demo(str(tmp_path_factory.mktemp("demo")))
    return {"base": base, "adapter": adapter}


def _tensors(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    found: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            found.update(load_file(os.path.join(folder, name)))
    return found


def test_split_parts_hold_every_tensor_unchanged_and_fit(demo, tmp_path) -> None:
    base = resolve_base(demo["base"])
    splits = plan_splits(base, CAP)
    assert [s.source for s in splits] == ["model.safetensors"] and len(splits[0].parts) == 3
    split = write_split_base(base, splits, str(tmp_path / "split"))
    weights = [f for f in split.files if f.path.endswith(".safetensors")]
    assert [f.path for f in weights] == [f"model-part-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert all(f.size <= CAP and f.sha256 and f.sample_sha256 for f in weights)
    before, after = _tensors(demo["base"]), _tensors(split.path)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    index = json.loads((tmp_path / "split" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(before) and set(index["weight_map"].values()) == {f.path for f in weights}
    assert [(f.path, f.size) for f in planned_base(base, splits).files] == [(f.path, f.size) for f in split.files]


def test_the_split_folder_loads_as_the_same_model(demo, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    base = resolve_base(demo["base"])
    split = write_split_base(base, plan_splits(base, CAP), str(tmp_path / "split"))
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.inference_mode():
        expected = AutoModelForCausalLM.from_pretrained(demo["base"])(ids).logits
        got = AutoModelForCausalLM.from_pretrained(split.path)(ids).logits
    assert torch.equal(expected, got)


def test_files_under_the_cap_are_not_split_and_small_caps_refuse_what_cannot_split(demo) -> None:
    base = resolve_base(demo["base"])
    assert plan_splits(base, 10**9) == ()
    with pytest.raises(UserInputError, match=r"alone is .*\(a tensor cannot be split\)"):
        plan_splits(base, 1000)
    pickled = dataclasses.replace(base, files=(FileEntry("pytorch_model.bin", 5 * CAP, "ab" * 32),))
    with pytest.raises(UserInputError, match="only safetensors files can be split"):
        plan_splits(pickled, CAP)


def test_package_base_plans_each_part_as_a_layer_under_the_cap(demo, tmp_path) -> None:
    request = BaseImageRequest(demo["base"], tag="127.0.0.1:5000/acme/base:1", max_layer_bytes=CAP, work=str(tmp_path))
    dry = plan_base_image(request, runnable="busy:1", dry_run=True)
    assert not (tmp_path / "base-split").exists()  # a dry run writes nothing
    plan = plan_base_image(request, runnable="busy:1")
    assert plan.split == dry.split == ("model.safetensors",)
    assert [layer.name for layer in plan.layers] == [layer.name for layer in dry.layers]
    assert all(layer.size <= CAP for layer in plan.layers) and len(plan.layers) == 4
    labels = dict(plan.labels())
    assert labels["io.packager.base.source-files-key"] == files_key(resolve_base(demo["base"]).files)
    assert set(json.loads(labels["io.packager.base.files"])) == {f.path for f in plan.base.files}
    assert plan.lookup_key == plan.source_files_key != plan.files_key


def test_a_shared_image_checks_the_mounted_base_against_the_split_files(demo, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))
    base = resolve_base(demo["base"])
    split = write_split_base(base, plan_splits(base, CAP), str(tmp_path / "split"))
    reference = f"127.0.0.1:5000/acme/base@sha256:{'cd' * 32}"
    files = tuple(dataclasses.asdict(f) for f in split.files)
    record = ModelImageRecord(reference, "127.0.0.1:5000/acme/base:1", "base", files_key(base.files), files)
    remember_model_image(record)
    request = package_request((("demo", demo["adapter"]),), "shared", "packager-runtime:x", "acme/shared:1")
    plan = plan_package(request).plan
    assert plan.image.model_image == reference
    lock = plan_lock(plan)
    assert {f["path"] for f in lock["base"]["files"]} == {f.path for f in split.files}
    verify_base(split.path, lock, "full")  # the split base, as the image's volume holds it, passes
    with pytest.raises(BaseMismatch, match="missing"):
        verify_base(demo["base"], lock, "quick")  # the unsplit folder is not what the lock expects
