"""Offline, strict JSON-schema oracle for the KServe custom resources we render (no cluster needed).

Every object schema here has ``additionalProperties: false``: the real CRDs leave unknown fields to the
apiserver's pruning, where a misspelt key silently vanishes; this oracle rejects it instead. Maps
(``dict(str, X)``, labels, resource limits) stay maps, and ``object`` fields accept anything.

Where each part comes from:

* ``InferenceService`` (``serving.kserve.io/v1beta1``): generated at run time from the ``openapi_types`` /
  ``attribute_map`` class attributes (and the generated "must not be ``None``" checks, as ``required``) of the
  OpenAPI model classes in the PyPI ``kserve`` SDK 0.21.0 (``kserve/models/*.py``, installed with
  ``pip install --no-deps kserve==0.21.0``), read with ``ast`` because importing ``kserve`` needs its heavy
  dependencies. ``status`` is left out: a rendered manifest has none.
* Kubernetes types the SDK references (``V1ObjectMeta``, ``V1Container``, ``V1Toleration``, ...): the strict
  definitions bundled with the installed ``kubernetes-validate`` 1.37.0, schema set ``v1.36.0-local-strict``
  (``_definitions.json``), the oldest set there that defines every core type SDK 0.21.0 references
  (``V1PodSchedulingGroup`` first appears in it). ``V1beta1MetricQuantity``, absent from the SDK, is taken as a
  resource ``Quantity`` (KServe's Go ``MetricQuantity`` accepts an integer or a quantity string).
* ``LLMInferenceService`` (``serving.kserve.io/v1alpha2``): the SDK names ``V1alpha2LLMInferenceServiceSpec``
  but does not ship it, so ``_llm_spec`` is written by hand for the fields we render. Field names and types
  follow https://kserve.github.io/website/docs/model-serving/generative-inference/llmisvc/lora-adapters
  (``spec.model.lora.adapters[].name`` / ``.uri``, required; ``maxRank``, ``maxAdapters``, ``maxCpuAdapters``;
  adapter URIs ``hf://``, ``s3://`` or ``pvc://`` only, ``oci://`` unsupported) and
  https://kserve.github.io/website/docs/model-serving/generative-inference/llmisvc/llmisvc-configuration
  (``model.uri`` / ``model.name``, ``replicas``, ``template`` / ``worker`` pod specs, ``baseRefs``,
  ``router.route`` / ``gateway`` / ``scheduler``), checked against KServe's v0.20.0 CRD and its
  ``pkg/apis/serving/v1alpha2/llm_inference_service_types.go`` (``template`` is a ``corev1.PodSpec``;
  model URI schemes the controller accepts: ``hf``, ``s3``, ``pvc``, ``oci``). ``template`` and ``worker`` use
  ``io.k8s.api.core.v1.PodSpec`` from the same kubernetes-validate set. Router parts are modelled only in
  their managed, empty form (``{}``); ``parallelism`` is ``ParallelismSpec`` from the same Go file (``tensor``,
  ``pipeline``, ``data``, ``dataLocal``: integers >= 1; ``dataRPCPort``: 1-65535; ``expert``: a boolean), inlined
  into the spec through ``WorkloadSpec`` beside ``replicas``, ``template`` and ``worker`` (the multi-node head and
  worker pod specs); other spec fields (``prefill``, ``scaling``, ...) are not modelled.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import jsonschema

SDK_VERSION = "0.21.0"
K8S_SCHEMA_SET = "v1.36.0-local-strict"
GROUP = "serving.kserve.io"
API_VERSIONS = {"InferenceService": f"{GROUP}/v1beta1", "LLMInferenceService": f"{GROUP}/v1alpha2"}
DEFS = "#/$defs/"
K8S_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
SDK_TO_K8S = {
    "V1ObjectMeta": K8S_META + "ObjectMeta",
    "V1ListMeta": K8S_META + "ListMeta",
    "ResourceQuantity": QUANTITY,
    "V1beta1MetricQuantity": QUANTITY,
}
PRIMITIVES = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
    "object": {},
}
MODEL_URI = r"^(hf|s3|pvc|oci)://\S+$"
ADAPTER_URI = r"^(hf|s3|pvc)://\S+$"


@functools.cache
def _k8s_definitions() -> dict[str, dict[str, Any]]:
    """The strict Kubernetes definitions bundled with kubernetes-validate, keyed like ``io.k8s.api.core.v1.Pod``."""
    path = distribution("kubernetes-validate").locate_file(
        f"kubernetes_validate/kubernetes-json-schema/{K8S_SCHEMA_SET}/_definitions.json"
    )
    return json.loads(Path(str(path)).read_text())["$defs"]


def _sdk_models_dir() -> Path:
    """Folder of the installed kserve SDK's generated model classes (found without importing ``kserve``)."""
    try:
        return Path(str(distribution("kserve").locate_file("kserve/models")))
    except PackageNotFoundError as missing:
        raise RuntimeError(f"the oracle needs: pip install --no-deps kserve=={SDK_VERSION}") from missing


@functools.cache
def _sdk_class_files() -> dict[str, Path]:
    """Class name -> SDK module defining it; scanned once, as some file names do not follow the class names
    (``V1beta1SKLearnSpec`` lives in ``v1beta1_sk_learn_spec.py``)."""
    found: dict[str, Path] = {}
    for path in sorted(_sdk_models_dir().glob("*.py")):
        found.update(dict.fromkeys(re.findall(r"^class (\w+)\(", path.read_text(), re.MULTILINE), path))
    return found


@functools.cache
def _sdk_class(name: str) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """(``openapi_types``, ``attribute_map``, required attribute names) of SDK class ``name``."""
    source = _sdk_class_files()[name].read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)
    found: dict[str, dict[str, str]] = {}
    for stmt in node.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map"):
            found[target.id] = ast.literal_eval(stmt.value)
    class_source = ast.get_source_segment(source, node) or ""
    required = tuple(re.findall(r"Invalid value for `(\w+)`, must not be `None`", class_source))
    return found["openapi_types"], found["attribute_map"], required


def _external_name(name: str) -> str:
    """The kubernetes-validate definition for an SDK type name that the SDK does not ship."""
    if name in SDK_TO_K8S:
        return SDK_TO_K8S[name]
    api = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", name)
    if api:
        return f"io.k8s.api.{api[1].lower()}.{api[2].lower()}.{api[3]}"
    if re.fullmatch(r"V1[A-Z]\w*", name):
        return f"io.k8s.api.core.v1.{name[2:]}"
    raise KeyError(f"no Kubernetes definition known for SDK type {name}")


class _Builder:
    """Collects ``$defs`` for one schema: SDK classes on demand, Kubernetes definitions with their ``$ref`` closure."""

    def __init__(self) -> None:
        """Start with no definitions."""
        self.defs: dict[str, Any] = {}

    def type_schema(self, type_name: str) -> dict[str, Any]:
        """JSON schema for an SDK type string such as ``'list[V1Container]'`` or ``'dict(str, str)'``."""
        if type_name in PRIMITIVES:
            return dict(PRIMITIVES[type_name])
        if type_name.startswith("list[") and type_name.endswith("]"):
            return {"type": "array", "items": self.type_schema(type_name[5:-1])}
        mapping = re.fullmatch(r"dict\(str, (.+)\)", type_name)
        if mapping:
            return {"type": "object", "additionalProperties": self.type_schema(mapping[1])}
        if type_name in _sdk_class_files():
            return self.sdk_ref(type_name)
        return self.k8s_ref(_external_name(type_name))

    def sdk_ref(self, name: str) -> dict[str, Any]:
        """``$ref`` to SDK class ``name``, defining it (strictly) the first time."""
        key = f"kserve.{name}"
        if key not in self.defs:
            self.defs[key] = {}
            types, keys, required = _sdk_class(name)
            self.defs[key] = {
                "type": "object",
                "properties": {keys[attr]: self.type_schema(t) for attr, t in types.items()},
                "required": [keys[attr] for attr in required],
                "additionalProperties": False,
            }
        return {"$ref": DEFS + key}

    def k8s_ref(self, name: str) -> dict[str, Any]:
        """``$ref`` to a kubernetes-validate definition, copying it and every definition it refers to."""
        pending = [name]
        while pending:
            current = pending.pop()
            if current in self.defs:
                continue
            definition = _k8s_definitions()[current]
            self.defs[current] = definition
            text = json.dumps(definition)
            pending += [ref[len(DEFS) :] for ref in re.findall(r'"\$ref": "([^"]+)"', text)]
        return {"$ref": DEFS + name}


def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema that admits only ``properties`` and needs ``required``."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _llm_spec(builder: _Builder) -> dict[str, Any]:
    """Hand-written ``LLMInferenceService`` v1alpha2 spec, for the fields we render (sources in the module doc)."""
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    positive = {"type": "integer", "minimum": 1}
    adapter = _strict(
        {"name": {"type": "string", "minLength": 1}, "uri": {"type": "string", "pattern": ADAPTER_URI}}, ("name", "uri")
    )
    lora = _strict(
        {
            "adapters": {"type": "array", "items": adapter},
            "maxRank": positive,
            "maxAdapters": positive,
            "maxCpuAdapters": positive,
        }
    )
    model = _strict(
        {"uri": {"type": "string", "pattern": MODEL_URI}, "name": {"type": "string", "minLength": 1}, "lora": lora},
        ("uri",),
    )
    model["dependentRequired"] = {"lora": ["name"]}
    managed = _strict({})
    pod_spec = builder.k8s_ref("io.k8s.api.core.v1.PodSpec")
    parallelism = _strict(
        {
            "tensor": positive,
            "pipeline": positive,
            "data": positive,
            "dataLocal": positive,
            "dataRPCPort": {"type": "integer", "minimum": 1, "maximum": 65535},
            "expert": {"type": "boolean"},
        }
    )
    return _strict(
        {
            "model": model,
            "replicas": {"type": "integer", "minimum": 0},
            "parallelism": parallelism,
            "labels": string_map,
            "annotations": string_map,
            "template": pod_spec,
            "worker": pod_spec,
            "baseRefs": {"type": "array", "items": builder.k8s_ref("io.k8s.api.core.v1.LocalObjectReference")},
            "storageInitializer": _strict({"enabled": {"type": "boolean"}}),
            "router": _strict({"route": managed, "gateway": managed, "scheduler": managed}),
        },
        ("model",),
    )


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    """The cached schema behind ``kserve_schema``."""
    if kind not in API_VERSIONS:
        raise ValueError(f"unknown KServe kind {kind!r}; expected one of {sorted(API_VERSIONS)}")
    builder = _Builder()
    spec = builder.sdk_ref("V1beta1InferenceServiceSpec") if kind == "InferenceService" else _llm_spec(builder)
    metadata = {**builder.k8s_ref(K8S_META + "ObjectMeta"), "required": ["name"]}
    document = _strict(
        {
            "apiVersion": {"const": API_VERSIONS[kind]},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **document, "$defs": builder.defs}


def kserve_schema(kind: str) -> dict[str, Any]:
    """A strict JSON schema (draft 2020-12) for ``kind``: ``"InferenceService"`` or ``"LLMInferenceService"``."""
    return copy.deepcopy(_schema(kind))


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    """A reusable validator for ``kind``."""
    return jsonschema.Draft202012Validator(_schema(kind))


def validate_kserve(document: dict[str, Any]) -> None:
    """Check ``document`` against the schema for its ``kind``.

    Raises ``ValueError`` for a missing or unknown kind and ``jsonschema.ValidationError`` for any other fault.
    """
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in API_VERSIONS:
        raise ValueError(f"unknown KServe kind {kind!r}; expected one of {sorted(API_VERSIONS)}")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(document))
    if error is not None:
        raise error
