"""AdapterHub adapters that do not merge: the plan serves them unmerged with packager's server and the `adapters`
library (copied into the image, pinned), in both layouts; what cannot be served is refused at plan time."""

from __future__ import annotations

import json
import os

import adapters
import pytest

from packager.errors import IncompatibleAdapterError, UserInputError
from packager.image import libraries
from packager.package import render_job
from packager.planning.job import plan_package
from packager.planning.request import PackageRequest
from tests import adapterhub_saves, families, models
from tests.requests import package_request


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapterhub-plan")
    llama = models.save_base(models.llama_config(hidden_size=128, intermediate_size=256), str(root / "llama"))
    bert = families.save_word_tokenizer(families.save_base("bert", "BertForSequenceClassification", str(root / "bert")))
    bottleneck = adapters.SeqBnConfig(reduction_factor=4)
    return {
        "llama": llama,
        "llama-64": models.save_base(models.llama_config(), str(root / "llama-64")),
        "bert": bert,
        "bottleneck": adapterhub_saves.save(llama, str(root / "bottleneck"), bottleneck),
        "bottleneck-2": adapterhub_saves.save(llama, str(root / "bottleneck-2"), bottleneck, seed=2),
        "head-1": adapterhub_saves.save(bert, str(root / "head-1"), bottleneck, head="classification"),
        "head-2": adapterhub_saves.save(bert, str(root / "head-2"), bottleneck, head="classification", seed=2),
        "static": adapterhub_saves.save(
            bert, str(root / "static"), bottleneck, "BertForSequenceClassification", train_static_head=True
        ),
        "static-untrained": adapterhub_saves.save(
            bert, str(root / "static-0"), bottleneck, "BertForSequenceClassification"
        ),
    }


def _request(named: dict[str, str], layout: str, work, **kw) -> PackageRequest:
    return package_request(tuple(named.items()), layout, "", "acme/hub:1", work=str(work), quiet=True, **kw)


def test_the_baked_plan_serves_it_unmerged_with_the_library_copied_into_the_image(hub, tmp_path) -> None:
    request = _request({"b": hub["bottleneck"]}, "baked", tmp_path, runtime="auto")
    job = plan_package(request)
    image = job.plan.image
    assert job.plan.merge is None and image.engine == "packager"
    assert "AdapterHub bottleneck adapter" in image.engine_reason and "`adapters` library" in image.engine_reason
    assert image.runtime.adapter_library == "adapters" and image.libraries == ("adapters==1.3.0",)
    rendered = render_job(job, request, log=lambda _l: None)
    shipped = {f.path for f in rendered.context.files}
    assert "/adapters/b/adapter.safetensors" in shipped and "/adapters/b/head_config.json" in shipped
    assert "/opt/packager/lib/adapters/__init__.py" in shipped
    assert os.path.isfile(os.path.join(rendered.context.path, "libraries/opt/packager/lib/adapters/__init__.py"))
    with open(os.path.join(rendered.context.path, "Dockerfile")) as f:
        dockerfile = f.read()
    assert '["libraries/", "/"]' in dockerfile and "PYTHONPATH=/opt/packager:/opt/packager/lib:" in dockerfile
    with open(os.path.join(rendered.context.path, "config", "opt", "packager", "runtime.json")) as f:
        assert json.load(f)["adapter_library"] == "adapters"


def test_a_peft_image_carries_no_library(tmp_path) -> None:
    from tests.plans import baked

    assert baked().image.libraries == ()


def test_runtime_vllm_is_refused_in_one_line(hub, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError, match=r"AdapterHub bottleneck.*--runtime packager"):
        plan_package(_request({"b": hub["bottleneck"]}, "baked", tmp_path, runtime="vllm"))


def test_shared_prediction_heads_plan_as_a_classifier(hub, tmp_path) -> None:
    plan = plan_package(_request({"a": hub["head-1"], "b": hub["head-2"]}, "shared", tmp_path)).plan
    assert plan.task.name == "SEQ_CLS" and plan.image.runtime.adapter_library == "adapters"
    assert [name for name, _ in plan.image.runtime.adapters] == ["a", "b"]


def test_a_shared_image_refuses_heads_beside_adapters_without_one(hub, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError, match="carry prediction heads and s do not"):
        plan_package(_request({"a": hub["head-1"], "s": hub["static-untrained"]}, "shared", tmp_path))


def test_a_trained_static_head_is_refused_shared_and_served_baked(hub, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError, match=r"brings its own classifier\.(weight|bias).*--layout baked"):
        plan_package(_request({"s": hub["static"]}, "shared", tmp_path))
    shared = plan_package(_request({"s": hub["static-untrained"]}, "shared", tmp_path / "s")).plan
    assert shared.image.runtime.adapter_library == "adapters", "the base's own head: shared is fine"
    baked = plan_package(_request({"s": hub["static"]}, "baked", tmp_path / "b")).plan
    assert baked.task.name == "SEQ_CLS" and "head_config.json" in {f.path for f in baked.adapter.files}


def test_an_adapter_for_another_base_is_refused_at_plan_time(hub, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError, match="hidden_size 128, but the base has 64"):
        plan_package(_request({"b": hub["bottleneck"]}, "baked", tmp_path, base=hub["llama-64"]))


def test_an_environment_without_the_pinned_library_is_refused_before_any_work(hub, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(libraries.PINS, "adapters", "9.9.9")
    with pytest.raises(UserInputError, match=r"needs the `adapters` library 9\.9\.9 .* has adapters 1\.3\.0; pip"):
        plan_package(_request({"b": hub["bottleneck"]}, "baked", tmp_path))
    assert not os.listdir(tmp_path)


def test_the_pin_is_the_extra_pyproject_declares() -> None:
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert libraries.requirement("adapters") in extras[libraries.EXTRAS["adapters"]]
    assert libraries.requirement("adapters") in extras["dev"]
