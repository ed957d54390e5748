"""plan_lock(plan): the lock is derived from the plan (and the typed results of later steps), nothing else."""

from __future__ import annotations

import dataclasses
import json

from packager.lock import plan_lock
from packager.plan import FileEntry
from tests import plans


def test_lock_of_a_merge_plan_has_inputs_and_merge_only() -> None:
    plan = dataclasses.replace(plans.baked(), image=None)
    lock = plan_lock(plan)
    assert set(lock) == {"packager_version", "adapter", "base", "merge"}
    assert lock["merge"] == {"engine": "stream", "dtype": "auto", "tokenizer_from": "base"}
    assert "sample_sha256" not in lock["adapter"]["files"][0]


def test_lock_of_a_package_adds_outputs_artefact_and_every_image_file() -> None:
    output = (FileEntry("model.safetensors", 3, "aa" * 32),)
    image_files = (FileEntry("/models/merged/model.safetensors", 3, "aa" * 32),)
    lock = plan_lock(plans.baked(), output=output, artefact={"kind": "int8"}, image_files=image_files)
    assert lock["output"]["files"] == [{"path": "model.safetensors", "size": 3, "sha256": "aa" * 32}]
    assert lock["artefact"] == {"kind": "int8"}
    assert lock["image"] == {
        "layout": "baked",
        "base_image": "packager-runtime:0123abcd",
        "tag": "127.0.0.1:5000/acme/demo:1.0",
        "files": [{"path": "/models/merged/model.safetensors", "size": 3, "sha256": "aa" * 32}],
    }


def test_shared_lock_lists_every_adapter_and_no_merge() -> None:
    lock = plan_lock(plans.shared())
    assert "merge" not in lock and sorted(lock["adapters"]) == ["chat", "sql"]
    assert lock["adapters"]["sql"]["files"][1]["sha256"] == "cd" * 32


def test_the_builder_does_not_change_the_lock() -> None:
    docker, oci = plans.baked(), plans.with_image(plans.baked(), builder="oci", push=True)
    assert json.dumps(plan_lock(docker), sort_keys=True) == json.dumps(plan_lock(oci), sort_keys=True)
    assert not docker.image.reproducible and oci.image.reproducible


def test_to_dict_shows_the_runtime_config_the_image_will_load() -> None:
    data = plans.shared().to_dict()
    assert data["merge"] is None and data["image"]["runtime"]["adapters"] == {
        "sql": "/adapters/sql",
        "chat": "/adapters/chat",
    }
