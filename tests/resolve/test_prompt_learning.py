"""Prompt-learning adapters (prompt, prefix, P-tuning): nothing to merge, so the plan serves them unmerged with
packager's server in both layouts, checked against the base first; merging or quantizing them is refused."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

from packager.artefact.spec import ArtefactSpec
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.merge.run import run_merge
from packager.package import render_job
from packager.planning.job import plan_package
from packager.planning.request import PackageRequest
from packager.resolve.resolver import ResolveRequest, resolve
from tests import families, models
from tests.requests import package_request

CONFIGS = {
    "PROMPT_TUNING": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "PREFIX_TUNING": lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "P_TUNING": lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16),
}


@pytest.fixture(scope="module")
def prompt_adapters(tmp_path_factory) -> dict[str, str]:
    """One real PEFT adapter of each prompt-learning method on a tiny Llama that vLLM could serve (hidden 128,
    4 heads of 32, 2 key-value heads), so that only the adapter keeps vLLM out."""
    root = tmp_path_factory.mktemp("prompt-learning")
    base = models.save_base(models.llama_config(hidden_size=128, intermediate_size=256), str(root / "base"))
    return {
        kind: families.save_task_adapter(base, str(root / kind), "CAUSAL_LM", make(), seed=1)
        for kind, make in CONFIGS.items()
    }


def _request(adapters: dict[str, str], layout: str, work, **kw) -> PackageRequest:
    named = tuple((f"a{i}", path) for i, path in enumerate(adapters.values()))
    return package_request(named, layout, "", "acme/prompt:1", work=str(work), quiet=True, **kw)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_prompt_learning_adapter_resolves_to_no_merge(prompt_adapters, kind) -> None:
    plan = resolve(ResolveRequest(prompt_adapters[kind])).plan
    assert plan.merge is None and plan.adapter.peft_type == kind and plan.adapter.is_unmerged
    assert plan.adapter.settings["num_virtual_tokens"] == 4
    assert any(f.path == "adapter_model.safetensors" and f.sha256 for f in plan.adapter.files)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_baked_plan_ships_base_and_adapter_unmerged_with_packagers_server(prompt_adapters, kind, tmp_path) -> None:
    request = _request({kind: prompt_adapters[kind]}, "baked", tmp_path, runtime="auto")
    job = plan_package(request)
    image = job.plan.image
    assert image.engine == "packager" and f"is a {kind} adapter" in image.engine_reason
    assert image.runtime.adapter_dir == "/adapters/a0" and image.runtime.model_dir == "/models/merged"
    assert all(f.sha256 for f in job.plan.base.files), "the base ships in the image: every file pinned"
    rendered = render_job(job, request, log=lambda _l: None)
    shipped = {f.path for f in rendered.context.files}
    assert "/models/merged/model.safetensors" in shipped and "/adapters/a0/adapter_model.safetensors" in shipped
    with open(os.path.join(rendered.context.path, "Dockerfile")) as f:
        assert '["adapters/a0/", "/"]' in f.read()
    with open(os.path.join(rendered.context.path, "config", "opt", "packager", "runtime.json")) as f:
        assert json.load(f)["adapter_dir"] == "/adapters/a0"


def test_the_shared_plan_serves_several_with_packagers_server(prompt_adapters, tmp_path) -> None:
    adapters = {"one": prompt_adapters["PROMPT_TUNING"], "two": prompt_adapters["PROMPT_TUNING"]}
    image = plan_package(_request(adapters, "shared", tmp_path)).plan.image
    assert image.engine == "packager" and "PROMPT_TUNING" in image.engine_reason
    assert [name for name, _ in image.runtime.adapters] == ["a0", "a1"]


@pytest.mark.parametrize("layout", ["baked", "shared"])
def test_runtime_vllm_is_refused_without_pointing_to_a_layout_that_cannot_serve_it(prompt_adapters, layout, tmp_path):
    with pytest.raises((UserInputError, IncompatibleAdapterError)) as caught:
        plan_package(_request({"p": prompt_adapters["PREFIX_TUNING"]}, layout, tmp_path, runtime="vllm"))
    message = str(caught.value)
    assert "PREFIX_TUNING" in message and "--runtime packager" in message and "--layout" not in message


@pytest.mark.parametrize(
    ("artefact", "flag"), [(ArtefactSpec("w8a8"), "--quantize w8a8"), (ArtefactSpec("none", "onnx"), "--export onnx")]
)
def test_quantizing_or_exporting_an_unmerged_adapter_is_refused(prompt_adapters, artefact, flag, tmp_path) -> None:
    request = _request({"p": prompt_adapters["PROMPT_TUNING"]}, "baked", tmp_path, artefact=artefact)
    with pytest.raises(IncompatibleAdapterError, match=f"served unmerged .* drop {flag}"):
        plan_package(request)


def test_merging_one_is_refused_in_one_line_that_names_the_way_to_serve_it(prompt_adapters, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError, match="nothing to merge; serve it unmerged with `packager package"):
        run_merge(ResolveRequest(prompt_adapters["P_TUNING"]), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kind", "field"), [("PROMPT_TUNING", "token_dim"), ("PREFIX_TUNING", "num_layers"), ("PREFIX_TUNING", "token_dim")]
)
def test_an_adapter_for_another_base_is_refused_at_plan_time(prompt_adapters, kind, field, tmp_path) -> None:
    """The base has hidden 128, 2 layers, 2 key-value heads of 32: prefix tuning's token_dim is 64."""
    folder = tmp_path / kind
    shutil.copytree(prompt_adapters[kind], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config[field] == {"PROMPT_TUNING": 128, "PREFIX_TUNING": 64}[kind] if field == "token_dim" else 2, config
    config[field] = config[field] * 2
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleAdapterError, match=f"{field}={config[field]}.*--base"):
        resolve(ResolveRequest(str(folder)))


def test_virtual_tokens_of_another_width_are_refused(prompt_adapters, bases) -> None:
    with pytest.raises(IncompatibleAdapterError, match="token_dim=128, but the base has 64; pass --base"):
        resolve(ResolveRequest(prompt_adapters["PROMPT_TUNING"], base=bases["llama"]))


def test_a_prompt_learning_adapter_for_another_task_is_refused(bases, tmp_path) -> None:
    adapter = families.save_task_adapter(
        bases["llama"], str(tmp_path / "cls"), "SEQ_CLS",
        PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4), num_labels=2,
    )  # fmt: skip
    with pytest.raises(IncompatibleAdapterError, match="SEQ_CLS; packager serves prompt-learning adapters for CAUSAL"):
        resolve(ResolveRequest(adapter))
