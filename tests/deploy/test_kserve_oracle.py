"""The offline KServe oracle accepts the documents we mean to render and rejects near misses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import jsonschema
import pytest

from tests.deploy.kserve_oracle import SDK_VERSION, kserve_schema, validate_kserve

DIGEST = "sha256:" + "0" * 64
IMAGE = f"registry:5000/demo@{DIGEST}"
BASE_OCI = f"oci://registry:5000/base@{DIGEST}"
KINDS = ("InferenceService", "LLMInferenceService")


def _probe() -> dict[str, Any]:
    """An HTTP GET /health probe on the serving port."""
    return {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10}


def _container(name: str, env: list[dict[str, str]]) -> dict[str, Any]:
    """A serving container as we render it."""
    return {
        "name": name,
        "image": IMAGE,
        "env": env,
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}, "requests": {"cpu": 2}},
        "readinessProbe": _probe(),
        "livenessProbe": _probe(),
    }


def _metadata() -> dict[str, Any]:
    """Metadata with labels and annotations."""
    return {
        "name": "demo",
        "labels": {"app.kubernetes.io/name": "demo", "app.kubernetes.io/managed-by": "packager"},
        "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
    }


def _security() -> dict[str, Any]:
    """The pod security context we render."""
    return {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True}


def inference_service() -> dict[str, Any]:
    """A valid v1beta1 InferenceService with a custom ``kserve-container`` and a modelcar ``STORAGE_URI``."""
    env = [{"name": "STORAGE_URI", "value": BASE_OCI}, {"name": "ADAPTERS", "value": "support"}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(),
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 1,
                "securityContext": _security(),
                "containers": [_container("kserve-container", env)],
            }
        },
    }


def llm_inference_service() -> dict[str, Any]:
    """A valid v1alpha2 LLMInferenceService with one LoRA adapter on a PVC."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": _metadata(),
        "spec": {
            "model": {
                "uri": BASE_OCI,
                "name": "base",
                "lora": {"adapters": [{"name": "support", "uri": "pvc://adapters/support"}]},
            },
            "replicas": 1,
            "template": {
                "securityContext": _security(),
                "containers": [_container("main", [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}])],
            },
        },
    }


VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "InferenceService": inference_service,
    "LLMInferenceService": llm_inference_service,
}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object nested in ``node``."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _rejects(document: dict[str, Any], *words: str) -> jsonschema.ValidationError:
    """Assert that ``document`` fails validation with an error that mentions every one of ``words``."""
    with pytest.raises(jsonschema.ValidationError) as caught:
        validate_kserve(document)
    text = f"{caught.value.message} {caught.value.json_path}"
    assert all(word in text for word in words), text
    return caught.value


def test_the_sdk_the_schema_is_built_from_is_the_pinned_one() -> None:
    assert version("kserve") == SDK_VERSION


@pytest.mark.parametrize("kind", KINDS)
def test_each_schema_is_itself_a_valid_draft_2020_12_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(kserve_schema(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_every_object_schema_with_fields_forbids_other_fields(kind: str) -> None:
    schemas = list(_walk(kserve_schema(kind)))
    loose = [
        sorted(s["properties"]) for s in schemas if "properties" in s and s.get("additionalProperties") is not False
    ]
    assert len(schemas) > 500
    assert not loose


@pytest.mark.parametrize("kind", KINDS)
def test_api_version_and_kind_are_fixed(kind: str) -> None:
    schema = kserve_schema(kind)
    assert schema["properties"]["kind"] == {"const": kind}
    assert schema["properties"]["apiVersion"]["const"] == VALID[kind]()["apiVersion"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_documents_we_render_pass(kind: str) -> None:
    validate_kserve(VALID[kind]())


def test_a_pvc_storage_uri_and_a_pvc_base_model_pass() -> None:
    isvc = inference_service()
    isvc["spec"]["predictor"]["containers"][0]["env"][0]["value"] = "pvc://claim/models"
    llm = llm_inference_service()
    llm["spec"]["model"]["uri"] = "pvc://claim/models"
    validate_kserve(isvc)
    validate_kserve(llm)


def test_maps_stay_open_to_any_key() -> None:
    doc = inference_service()
    doc["metadata"]["labels"]["any.example.com/thing"] = "x"
    doc["spec"]["predictor"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    validate_kserve(doc)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_key_at_the_top_of_spec_fails(kind: str) -> None:
    doc = VALID[kind]()
    doc["spec"]["adapters"] = ["support"]
    _rejects(doc, "adapters", "$.spec")


def test_an_unknown_key_inside_an_inference_service_container_fails() -> None:
    doc = inference_service()
    doc["spec"]["predictor"]["containers"][0]["storageUri"] = BASE_OCI
    _rejects(doc, "storageUri", "containers[0]")


def test_an_unknown_key_inside_an_llm_template_container_fails() -> None:
    doc = llm_inference_service()
    doc["spec"]["template"]["containers"][0]["readinesProbe"] = _probe()
    _rejects(doc, "readinesProbe", "containers[0]")


def test_a_replica_count_given_as_a_word_fails() -> None:
    isvc = inference_service()
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    llm = llm_inference_service()
    llm["spec"]["replicas"] = "one"
    _rejects(isvc, "'one'", "minReplicas")
    _rejects(llm, "'one'", "replicas")
    llm["spec"]["replicas"] = -1
    _rejects(llm, "-1", "replicas")


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_api_version_fails(kind: str) -> None:
    doc = VALID[kind]()
    doc["apiVersion"] = "serving.kserve.io/v1alpha1"
    _rejects(doc, "apiVersion")


def test_host_network_is_a_predictor_field_but_not_a_spec_field() -> None:
    doc = inference_service()
    doc["spec"]["predictor"]["hostNetwork"] = True
    validate_kserve(doc)
    moved = inference_service()
    moved["spec"]["hostNetwork"] = True
    _rejects(moved, "hostNetwork", "$.spec")


def test_an_injected_pod_field_of_the_wrong_type_fails() -> None:
    isvc = inference_service()
    isvc["spec"]["predictor"]["hostNetwork"] = "yes"
    llm = llm_inference_service()
    llm["spec"]["template"]["hostNetwork"] = "yes"
    _rejects(isvc, "hostNetwork")
    _rejects(llm, "hostNetwork")


def test_a_pod_field_injected_into_the_llm_model_fails() -> None:
    doc = llm_inference_service()
    doc["spec"]["model"]["hostNetwork"] = True
    _rejects(doc, "hostNetwork", "model")


def test_an_inference_service_needs_a_predictor() -> None:
    doc = inference_service()
    doc["spec"]["minReplicas"] = 1
    _rejects(doc, "minReplicas", "$.spec")
    doc["spec"] = {}
    _rejects(doc, "predictor")


def test_metadata_needs_a_name_and_rejects_unknown_keys() -> None:
    doc = inference_service()
    del doc["metadata"]["name"]
    _rejects(doc, "name")
    typo = inference_service()
    typo["metadata"]["label"] = {"a": "b"}
    _rejects(typo, "label")


def test_a_status_is_not_part_of_what_we_render() -> None:
    doc = inference_service()
    doc["status"] = {"url": "http://demo"}
    _rejects(doc, "status")


def test_a_resource_quantity_must_be_a_string_or_number() -> None:
    doc = inference_service()
    doc["spec"]["predictor"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = ["1"]
    _rejects(doc, "nvidia.com/gpu")


def test_an_env_entry_needs_a_name() -> None:
    doc = llm_inference_service()
    doc["spec"]["template"]["containers"][0]["env"] = [{"value": "INFO"}]
    _rejects(doc, "name")


@pytest.mark.parametrize(
    ("adapter", "words"),
    [
        ({"name": "support", "uri": "pvc://adapters/support", "path": "/mnt/lora"}, ("path",)),
        ({"name": "support"}, ("uri",)),
        ({"name": "support", "uri": "oci://registry:5000/support:1"}, ("oci://",)),
        ({"name": "support", "uri": "/mnt/lora/support"}, ("/mnt/lora",)),
    ],
)
def test_a_malformed_lora_adapter_fails(adapter: dict[str, str], words: tuple[str, ...]) -> None:
    doc = llm_inference_service()
    doc["spec"]["model"]["lora"]["adapters"] = [adapter]
    _rejects(doc, *words)


def test_lora_adapters_need_a_named_base_model() -> None:
    doc = llm_inference_service()
    del doc["spec"]["model"]["name"]
    _rejects(doc, "name")


def test_an_llm_model_needs_a_uri_with_a_supported_scheme() -> None:
    doc = llm_inference_service()
    doc["spec"]["model"]["uri"] = "registry:5000/base"
    _rejects(doc, "registry:5000/base")
    del doc["spec"]["model"]["uri"]
    _rejects(doc, "uri")


def test_the_managed_router_passes_but_unknown_router_parts_fail() -> None:
    doc = llm_inference_service()
    doc["spec"]["router"] = {"route": {}, "gateway": {}, "scheduler": {}}
    validate_kserve(doc)
    doc["spec"]["router"]["ingres"] = {}
    _rejects(doc, "ingres")


@pytest.mark.parametrize("kind", [None, "Deployment", "ServingRuntime"])
def test_an_unknown_kind_is_a_value_error(kind: str | None) -> None:
    doc = inference_service()
    doc["kind"] = kind
    with pytest.raises(ValueError, match="unknown KServe kind"):
        validate_kserve(doc)
    with pytest.raises(ValueError, match="unknown KServe kind"):
        kserve_schema(str(kind))


def test_a_kind_that_does_not_match_the_document_fails() -> None:
    doc = inference_service()
    doc["kind"] = "LLMInferenceService"
    _rejects(doc)
