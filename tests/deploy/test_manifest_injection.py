"""Every user value that reaches a manifest is either refused (UserInputError) or comes out as one plain scalar
that parses back to exactly itself: none can add a key or a document. Each accepted hostile value's manifests
are compared, key paths and document counts, with the same manifests rendered from a benign value."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import yaml

from packager.deploy.render import render_manifests
from packager.deploy.values import k8s_name
from packager.errors import UserInputError
from packager.plan import FileEntry, PackagePlan
from packager.planning.job import service_name
from packager.planning.model_images import model_image_for, pinned_reference
from tests import plans
from tests.deploy.test_manifests import MODEL, REF, deploy, documents, on_vllm

FULL = deploy(on_vllm(plans.shared(), model_image=MODEL))  # every target and file, kserve-llm.yaml too
UNHASHED = deploy(plans.with_base(plans.shared(), files=(FileEntry("model.safetensors", 10),)), ["compose"], "volume")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # what a Service and an InferenceService must be named
HOSTILE = ["x: y", "---", "...", "{a: b}", "[1, 2]", "$(HOME)", "${PATH}", "#x", "&a *a", "'q'", 'x", "y": "z', "? k"]
HOSTILE += ["\\n", "ünï", " lead", "trail ", "!!python/object:os.system"]
BAD_PATHS = ["/srv/x}\nservices: {}", "/srv/$HOME", 'relative/"x"', "/srv/${PATH}", '/srv/x"', "srv/x", "/srv/x:y"]
BAD_PATHS += ["/a\\b", "/srv/x\n}\nservices: {}", "/srv/x'", "/srv/`id`", ""]
CONTROL = ['x"\n  hostNetwork: true', "x\n---\nkind: Pod", "x\n", "a\tb", "x\r", "x\x00"]


def key_paths(node: Any, alias: dict[str, str], prefix: tuple = ()) -> set[tuple]:
    """Every key path of a parsed document (list items by index); keys in `alias` renamed."""
    found = {prefix}
    if isinstance(node, dict):
        for key, value in node.items():
            found |= key_paths(value, alias, (*prefix, alias.get(key, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= key_paths(value, alias, (*prefix, index))
    return found


def same_shape(plan: PackagePlan, benign: PackagePlan, reference: str = REF) -> dict[str, list[dict[str, Any]]]:
    """Render both; assert the same files, document counts and key paths (the service key renamed); return
    the hostile plan's parsed documents."""
    hostile, normal = render_manifests(plan, reference), render_manifests(benign, REF)
    assert set(hostile) == set(normal)
    alias = {k8s_name(plan): "<name>", k8s_name(benign): "<name>"}
    parsed = {name: documents(text) for name, text in hostile.items()}
    for name, text in normal.items():
        expected = [key_paths(d, alias) for d in documents(text)]
        assert [key_paths(d, alias) for d in parsed[name]] == expected, name
    return parsed


def with_vllm(plan: PackagePlan, **changes) -> PackagePlan:
    """The plan with its vLLM settings changed."""
    return plans.with_runtime(plan, vllm=dataclasses.replace(plan.image.runtime.vllm, **changes))


def annotated(docs: dict[str, list[dict[str, Any]]], key: str) -> list[str]:
    """The annotation `key` of every document that has it."""
    return [
        d["metadata"]["annotations"][key]
        for v in docs.values()
        for d in v
        if key in d.get("metadata", {}).get("annotations", {})
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_base_id_stays_one_annotation_value(value: str) -> None:
    docs = same_shape(plans.with_base(FULL, repo_id=value), FULL)
    assert annotated(docs, "packager.io/base") == [value] * 2  # Deployment, LLMInferenceService (kserve: one file)
    compose = same_shape(plans.with_base(UNHASHED, repo_id=value), UNHASHED)["compose.yaml"][0]
    assert DNS_1123.match(compose["volumes"]["base"]["name"])  # unhashed: the volume is named after the base


@pytest.mark.parametrize("value", CONTROL)
def test_a_base_id_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(UserInputError, match="newline or control character"):
        render_manifests(plans.with_base(FULL, repo_id=value), REF)
    compose = same_shape(plans.with_base(UNHASHED, repo_id=value), UNHASHED)["compose.yaml"][0]
    assert DNS_1123.match(compose["volumes"]["base"]["name"])


@pytest.mark.parametrize("value", HOSTILE)
def test_the_vllm_base_name_stays_one_value(value: str) -> None:
    docs = same_shape(with_vllm(FULL, base_name=value), FULL)
    assert docs["kserve-llm.yaml"][0]["spec"]["model"]["name"] == value


@pytest.mark.parametrize("value", CONTROL)
def test_a_vllm_base_name_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(UserInputError, match="newline or control character"):
        render_manifests(with_vllm(FULL, base_name=value), REF)


def _serving(*names: str) -> PackagePlan:
    served = tuple(plans.adapter(name, f"{i:02x}" * 32) for i, name in enumerate(names))
    return dataclasses.replace(FULL, served=served)


@pytest.mark.parametrize("name", ["a\nb", "a: b", "a\n", "a\n---", "../x", "$(id)", "a,b", "", " a", "a b"])
def test_an_adapter_name_that_is_not_a_plain_name_is_refused(name: str) -> None:
    with pytest.raises(UserInputError, match=r"not a valid name|newline"):
        render_manifests(_serving("sql", name), REF)


def test_plain_adapter_names_reach_the_llm_inference_service_as_they_are() -> None:
    docs = same_shape(_serving("sql.v2", "A_b-1", "x__y"), FULL)
    assert annotated(docs, "packager.io/adapters") == ["sql.v2,A_b-1,x__y"]


@pytest.mark.parametrize("target", ["compose", "kubernetes", "kserve"])
@pytest.mark.parametrize(
    "reference",
    ["evil\n---", "acme/x:1\n---\nkind: Pod", "acme/x:1\n", "acme/x:1 #c", "acme/$(id):1", "acme/X:1", 'acme/x:1"', ""],
)
def test_an_image_reference_that_is_not_one_is_refused(target: str, reference: str) -> None:
    """`reference` is the image as pushed (REPO@sha256:...), or the plan's tag when nothing was pushed."""
    with pytest.raises(UserInputError, match=r"not a valid image reference|newline"):
        render_manifests(deploy(FULL, [target]), reference)


@pytest.mark.parametrize("value", [MODEL + "\n", MODEL + "\n---", "acme/x:1\nkind: Pod", "acme/ x", MODEL + '"'])
@pytest.mark.parametrize("target", ["compose", "kubernetes", "kserve"])
def test_a_model_image_that_is_not_a_reference_is_refused(target: str, value: str) -> None:
    with pytest.raises(UserInputError, match=r"not a valid image reference|newline"):
        render_manifests(deploy(plans.with_image(FULL, model_image=value), [target]), REF)


UNPINNED = ["127.0.0.1:5000/acme/tiny-base:1", "acme/tiny-base", MODEL + "\n---", MODEL[:-1], MODEL.replace("@", " @")]


@pytest.mark.parametrize("value", [*UNPINNED, MODEL + "\n"])  # manifests refuse it
def test_a_model_image_given_by_hand_must_be_pinned_by_digest(value: str) -> None:
    with pytest.raises(UserInputError, match="not pinned by digest"):
        model_image_for(value, ())
    assert pinned_reference(MODEL) == model_image_for(MODEL, ())[0] == MODEL


@pytest.mark.parametrize("path", [*BAD_PATHS, "/srv/x\n"])
def test_a_compose_base_path_that_is_not_plain_is_refused(path: str) -> None:
    with pytest.raises(UserInputError, match="base path"):
        render_manifests(deploy(plans.shared(base_source=path), ["compose"]), REF)


@pytest.mark.parametrize("path", ["/srv/my models/tiny", "/srv/a+b@c/-x", "/", "/srv/a.b_c-d/"])
def test_a_plain_compose_base_path_is_the_bind_source(path: str, compose_config) -> None:
    plan, benign = deploy(plans.shared(base_source=path), ["compose"]), deploy(plans.shared(), ["compose"])
    same_shape(plan, benign)
    text = render_manifests(plan, REF)["compose.yaml"]
    for base_dir, expected in ((None, path.rstrip("/") or "/"), ("/data/base", "/data/base")):
        proc = compose_config(text, base_dir, quiet=False)
        assert proc.returncode == 0, proc.stderr
        assert yaml.safe_load(proc.stdout)["services"]["shared"]["volumes"][0]["source"] == expected


SERVED = [
    "evil\n---",
    "x: y",
    "My_Model.V2",
    "---",
    "",
    "a" * 100,
    "-lead-",
    "ünïcode",
    "$(id)",
    "a..b",
    "a" * 39 + "-b",
]


@pytest.mark.parametrize("served", SERVED)
def test_any_served_name_becomes_a_valid_kubernetes_name(served: str) -> None:
    plan = plans.with_runtime(FULL, served_name=served)
    name = k8s_name(plan)
    assert DNS_1035.match(name) and len(name) <= 40, name
    docs = same_shape(plan, FULL)
    names = {d["metadata"]["name"] for v in docs.values() for d in v if "metadata" in d}
    assert names == {name} and set(docs["compose.yaml"][0]["services"]) == {"base", name}


@pytest.mark.parametrize(
    "tag",
    [
        "127.0.0.1:5000/acme/my_model.v2:1",
        "acme/a--b:1",
        "acme/" + "x" * 120 + ":1",
        "r.example.com/t/sub/m__x",
        "acme/7b:1",
        "127.0.0.1:5000/acme/2024_model:1",
    ],
)
def test_a_tag_gives_a_service_name_kubernetes_accepts(tag: str) -> None:
    plan = deploy(plans.with_runtime(plans.with_image(FULL, tag=tag), served_name=service_name(tag)), ["kubernetes"])
    name = k8s_name(plan)
    assert DNS_1035.match(name), name
    service = documents(render_manifests(plan, REF)["kubernetes.yaml"])[-1]
    assert service["kind"] == "Service" and service["metadata"]["name"] == name


@pytest.mark.parametrize("value", [*HOSTILE, *CONTROL, "Upper", "a" * 64])
def test_a_hostile_api_key_secret_name_is_refused(value) -> None:
    """The Secret's name reaches every target (compose: as NAME.env): only an RFC 1123 label passes."""
    plan = dataclasses.replace(FULL, deploy=dataclasses.replace(FULL.deploy, api_key_secret=value))
    with pytest.raises(UserInputError, match="not a valid Kubernetes name"):
        render_manifests(plan, REF)
