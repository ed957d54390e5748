"""The base-model image's plan: a `meta` layer plus one layer per weight file, labels that pin every file, the
inputs it refuses (a layer above the cap, an unhashed file, a path that is not plain), and a stable tag."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from packager.errors import UserInputError
from packager.image.filters import image_ref
from packager.model_image.plan import ModelImagePlan, default_tag, plan_model_image
from packager.plan import BaseSpec, FileEntry, files_key
from packager.resolve.resolver import resolve_base

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "vocab_size": 16,
    "torch_dtype": "float32",
    "tie_word_embeddings": False,
}


def write_sharded_base(folder: str) -> str:
    """A base folder with two safetensors shards (different sizes), their index, a config and a tokenizer config."""
    os.makedirs(folder, exist_ok=True)
    tensors = [
        {"model.embed_tokens.weight": np.arange(16 * 8, dtype=np.float32).reshape(16, 8)},
        {"lm_head.weight": np.full((16, 4), 2.0, dtype=np.float32), "model.norm.weight": np.ones(8, np.float32)},
    ]
    weight_map = {}
    for name, state in zip(SHARDS, tensors, strict=True):
        save_file(state, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, name))
    index = {"metadata": {"total_size": 16 * 8 * 4 + 16 * 4 * 4 + 8 * 4}, "weight_map": weight_map}
    files = {"config.json": CONFIG, "model.safetensors.index.json": index, "tokenizer_config.json": {"x": 1}}
    for name, data in files.items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump(data, f)
    return folder


@pytest.fixture
def base(tmp_path) -> BaseSpec:
    return resolve_base(write_sharded_base(str(tmp_path / "tiny-base")))


def make_plan(base: BaseSpec, max_layer_bytes: int = 10**9, tag: str = "127.0.0.1:5000/acme/base:1") -> ModelImagePlan:
    return plan_model_image(base, tag, "packager-modelbase:0123abcd", "oci", True, max_layer_bytes)


def test_fixture_base_is_what_the_tests_assume(base) -> None:
    names = {f.path for f in base.files}
    assert {*SHARDS, "config.json", "model.safetensors.index.json", "tokenizer_config.json"} <= names
    assert all(f.sha256 for f in base.files)


def test_layers_are_meta_then_one_per_weight_file(base) -> None:
    plan = make_plan(base)
    layers = plan.layers
    assert [layer.name for layer in layers] == ["meta", *(f"weights/{s}" for s in SHARDS)]
    meta = {f.path for f in layers[0].files}
    assert meta == {f.path for f in base.files if not f.path.endswith(".safetensors")}
    assert "model.safetensors.index.json" in meta and "config.json" in meta
    for layer, shard in zip(layers[1:], SHARDS, strict=True):
        assert [f.path for f in layer.files] == [shard]
        assert layer.size == os.path.getsize(os.path.join(base.path, shard))
    placed = [f.path for layer in layers for f in layer.files]
    assert sorted(placed) == sorted(f.path for f in base.files)  # every file once, none twice


def test_weight_layers_are_sorted_whatever_the_file_order(base) -> None:
    shuffled = dataclasses.replace(base, files=tuple(reversed(base.files)))
    assert [layer.name for layer in make_plan(shuffled).layers] == [layer.name for layer in make_plan(base).layers]


def test_labels_name_the_base_and_the_sha256_of_every_file(base) -> None:
    pinned = dataclasses.replace(base, repo_id="acme/tiny-llama", commit="0123456789abcdef")
    plan = make_plan(pinned)
    pairs = plan.labels()
    assert pairs == sorted(pairs)
    labels = dict(pairs)
    assert labels["io.packager.base.id"] == "acme/tiny-llama"
    assert labels["org.opencontainers.image.title"] == "acme/tiny-llama"
    assert labels["io.packager.base.revision"] == "0123456789abcdef"
    assert labels["io.packager.kind"] == "base-model"
    assert labels["io.packager.models-dir"] == "/models"
    assert labels["org.opencontainers.image.base.name"] == "packager-modelbase:0123abcd"
    assert labels["io.packager.base.files-key"] == files_key(base.files) == plan.files_key
    files = json.loads(labels["io.packager.base.files"])
    assert files == {f.path: f.sha256 for f in base.files}
    assert len(files) == len(base.files) >= 5


def test_labels_of_a_local_folder_use_its_name(base) -> None:
    labels = dict(make_plan(base).labels())
    assert labels["io.packager.base.id"] == "tiny-base"
    assert labels["io.packager.base.revision"] == ""
    named = dict(make_plan(dataclasses.replace(base, revision="v2")).labels())
    assert named["io.packager.base.revision"] == "v2"


def test_a_layer_above_the_cap_is_refused_naming_the_fix(base) -> None:
    biggest = max(layer.size for layer in make_plan(base).layers)
    make_plan(base, max_layer_bytes=biggest)  # at the cap: accepted
    with pytest.raises(UserInputError) as caught:
        make_plan(base, max_layer_bytes=biggest - 1)
    message = caught.value.message
    assert "\n" not in message
    assert "--max-layer-size" in message and "max_shard_size" in message
    assert "weights/" in message


def test_an_unhashed_file_is_refused(base) -> None:
    files = tuple(dataclasses.replace(f, sha256=None) if f.path == SHARDS[1] else f for f in base.files)
    with pytest.raises(UserInputError, match="sha256"):
        make_plan(dataclasses.replace(base, files=files))


@pytest.mark.parametrize("path", ["../outside.safetensors", "/etc/passwd", "a//b.json", "sub/../x.json", "a b.json"])
def test_a_path_that_is_not_plain_is_refused(base, path) -> None:
    bad = dataclasses.replace(base, files=(*base.files, FileEntry(path, 3, "ab" * 32)))
    with pytest.raises(UserInputError, match="not a plain relative file path"):
        make_plan(bad)


def test_a_nested_plain_path_is_accepted(base) -> None:
    nested = dataclasses.replace(base, files=(*base.files, FileEntry("1_Pooling/config.json", 3, "ab" * 32)))
    assert "1_Pooling/config.json" in {f.path for f in make_plan(nested).layers[0].files}


@pytest.mark.parametrize("tag", ["UPPER/Case:1", "acme/base:1\nRUN id", ""])
def test_a_bad_tag_is_refused(base, tag) -> None:
    with pytest.raises(UserInputError, match="not a valid image reference"):
        make_plan(base, tag=tag)


def test_default_tag_is_stable_and_follows_the_content(base) -> None:
    tag = default_tag(base)
    assert image_ref(tag) == tag
    assert tag == f"packager/tiny-base-base:{files_key(base.files)[:12]}"
    assert default_tag(dataclasses.replace(base, files=tuple(reversed(base.files)))) == tag
    assert default_tag(dataclasses.replace(base, path="/elsewhere/tiny-base")) == tag
    changed = tuple(dataclasses.replace(f, sha256="0" * 64) if f.path == SHARDS[0] else f for f in base.files)
    other = default_tag(dataclasses.replace(base, files=changed))
    assert other != tag and other.split(":")[0] == tag.split(":")[0]


def test_default_tag_of_an_odd_name_is_a_valid_reference(base) -> None:
    odd = dataclasses.replace(base, repo_id="Org/Some_Model.V2")
    tag = default_tag(odd)
    assert image_ref(tag) == tag and tag.startswith("packager/org-some-model-v2-base:")


def test_to_dict_is_json_serialisable(base) -> None:
    plan = make_plan(base)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["tag"] == plan.tag and data["runnable_image"] == plan.runnable_image
    assert data["layers"] == [{"name": layer.name, "bytes": layer.size} for layer in plan.layers]
    assert {f["path"]: f["sha256"] for f in data["base"]["files"]} == {f.path: f.sha256 for f in base.files}
