"""End to end: prompt-learning adapters (nothing to merge) in real images, served unmerged by packager's server:
a baked image holding base and adapter, a shared image holding two adapters for a mounted base (issue 18)."""

from __future__ import annotations

import os

import pytest
from peft import PrefixTuningConfig, PromptTuningConfig

from packager.demo import build_base
from tests import families
from tests.e2e import containers
from tests.e2e.test_containers import _package, peft_answers, served_answers

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("prompt-demo")
    os.chmod(root, 0o755)  # bind-mounted into a container that runs as uid 10001
    base = build_base(str(root / "base"), seed=0, hidden_size=128)
    for name in os.listdir(base):
        os.chmod(os.path.join(base, name), 0o644)
    return base


def test_a_baked_prefix_tuning_image_answers_like_peft(demo_base, runtime_image, docker_client, tmp_path) -> None:
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)
    adapter = families.save_task_adapter(demo_base, str(tmp_path / "prefix"), "CAUSAL_LM", config)
    report = _package(tmp_path, runtime_image, [("prefix", adapter)], "baked", "demo/prefix:1", runtime="auto")
    assert containers.runtime_json(report.context)["adapter_dir"] == "/adapters/prefix"
    expected = peft_answers(demo_base, {"prefix": adapter})
    assert served_answers(docker_client, report.image, expected) == expected  # no mount: the base is in the image


def test_a_shared_prompt_tuning_image_serves_each_adapter_like_peft(demo_base, runtime_image, docker_client, tmp_path):
    adapters = [
        (name, families.save_task_adapter(demo_base, str(tmp_path / name), "CAUSAL_LM",
                                          PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n), seed=n))
        for name, n in (("short", 4), ("long", 8))
    ]  # fmt: skip
    report = _package(tmp_path, runtime_image, adapters, "shared", "demo/prompt:1", runtime="auto")
    assert containers.runtime_json(report.context).get("engine", "packager") == "packager"
    expected = peft_answers(demo_base, dict(adapters))
    assert expected["short"] != expected["long"], "the adapters must differ, or this test proves nothing"
    assert served_answers(docker_client, report.image, expected, demo_base) == expected
