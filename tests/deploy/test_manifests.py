"""Rendered deployment manifests: whole-file goldens, every document validated offline (kubernetes-validate at
the version each file claims, the KServe oracle, docker-compose), proof that those checks can fail, semantics."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from packager.deploy.render import manifest_names, render_manifests
from packager.deploy.values import check_deploy
from packager.errors import UserInputError
from packager.plan import DEPLOY_TARGETS, DeploySpec, PackagePlan
from packager.runtime.config import VllmSettings
from tests import plans
from tests.deploy.kserve_oracle import validate_kserve

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "deploy")
REF = "127.0.0.1:5000/acme/shared@sha256:" + "5e" * 32
BAKED_REF = "127.0.0.1:5000/acme/demo@sha256:" + "ba" * 32
MODEL = "127.0.0.1:5000/acme/tiny-base@sha256:" + "7b" * 32
UID = 10001
POD_KINDS = ("Deployment", "Job", "InferenceService", "LLMInferenceService")
MOUNT = {"name": "base", "mountPath": "/base", "readOnly": True, "subPath": "models"}
OCI, PVC = f"oci://{MODEL}", "pvc://shared-base/models"
BASE_URIS = {"shared-vllm-image": OCI, "shared-image": OCI, "shared-vllm-pvc": PVC, "shared": PVC}
BASE_URIS["shared-vllm-cuda-kserve-pvc"] = PVC  # kserve alone, on a claim: no loader there


def deploy(plan: PackagePlan, targets=DEPLOY_TARGETS, volume: str = "auto", replicas: int = 1) -> PackagePlan:
    """The plan asking for these manifests."""
    return dataclasses.replace(plan, deploy=DeploySpec(tuple(targets), volume, replicas))


def on_vllm(plan: PackagePlan, device: str = "cpu", **image) -> PackagePlan:
    """The plan served by vLLM (from vLLM's CUDA image on cuda); `image`: more ImagePlan changes."""
    name = plan.base.label_id if plan.image.layout == "shared" else "demo"
    settings = VllmSettings("bfloat16", 4096, name, 16, 3, device)
    if device == "cuda":
        image = {"base_image": "vllm/vllm-openai:v0.32.0", "device": "cuda", **image}
    return plans.with_image(plans.with_runtime(plan, engine="vllm", vllm=settings), **image)


# case -> (plan, image reference); the first ones are pinned whole-file by goldens
GOLDEN_CASES = {
    "baked": (deploy(plans.baked()), BAKED_REF),
    "shared": (deploy(plans.shared()), REF),  # auto without a model image: compose bind, kubernetes/kserve pvc
    "shared-pvc-loader": (deploy(plans.with_image(plans.shared(), model_image=MODEL), ["kubernetes"], "pvc"), REF),
    "shared-volume": (deploy(plans.shared(), ["compose"], "volume"), REF),
    "shared-vllm-image": (deploy(on_vllm(plans.shared(), model_image=MODEL)), REF),
    "shared-vllm-cuda-image": (deploy(on_vllm(plans.shared(), "cuda", model_image=MODEL)), REF),
}
CASES = {
    **GOLDEN_CASES,
    "shared-image": (deploy(plans.with_image(plans.shared(), model_image=MODEL)), REF),
    "shared-vllm-pvc": (deploy(on_vllm(plans.shared()), ["kubernetes", "kserve"], "pvc", replicas=0), REF),
    "shared-vllm-cuda-kserve-pvc": (deploy(on_vllm(plans.shared(), "cuda", model_image=MODEL), ["kserve"], "pvc"), REF),
    "baked-vllm-cuda": (deploy(on_vllm(plans.baked(), "cuda"), replicas=3), BAKED_REF),
    "unpushed-tag": (deploy(plans.shared()), "acme/shared:2"),
}


def documents(text: str) -> list[dict[str, Any]]:
    """Every YAML document of a manifest; none may be empty."""
    docs = list(yaml.safe_load_all(text))
    assert docs and all(isinstance(d, dict) for d in docs), docs
    return docs


def k8s_version(text: str) -> str:
    """The minimum Kubernetes a kubernetes.yaml states in its header (`# Needs Kubernetes X.Y or later`)."""
    claims = re.findall(r"^# Needs Kubernetes (\d+\.\d+) or later", text, re.MULTILINE)
    assert len(claims) == 1 and text.splitlines()[1].startswith("# Needs Kubernetes"), text[:300]
    return claims[0]


def rendered(case: str) -> dict[str, list[dict[str, Any]]]:
    """The case's manifests, parsed: {file name: documents}."""
    plan, reference = CASES[case]
    return {name: documents(text) for name, text in render_manifests(plan, reference).items()}


def one(case: str, kind: str) -> dict[str, Any]:
    """The one document of this kind among the case's manifests."""
    found = [d for docs in rendered(case).values() for d in docs if d.get("kind") == kind]
    assert len(found) == 1, (case, kind, len(found))
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Deployment, Job, InferenceService or LLMInferenceService."""
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return doc["spec"]["predictor"] if doc["kind"] == "InferenceService" else doc["spec"]["template"]


def env_of(doc: dict[str, Any]) -> dict[str, str]:
    """The serving container's environment, by name."""
    return {e["name"]: e["value"] for e in pod_spec(doc)["containers"][0].get("env", [])}


def _golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it after review)"


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_manifests_match_golden(case: str) -> None:
    plan, reference = GOLDEN_CASES[case]
    files = render_manifests(plan, reference)
    assert set(files) == {n for t in plan.deploy.targets for n in manifest_names(plan, t)}
    for name, text in files.items():
        _golden(f"{case}.{name}", text)


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_document_validates(case: str, compose_config) -> None:
    plan, reference = CASES[case]
    files = render_manifests(plan, reference)
    checked = total = 0
    for name, text in files.items():
        docs = documents(text)
        total += len(docs)
        if name == "kubernetes.yaml":
            version = k8s_version(text)
            for doc in docs:  # a kind without a schema raises SchemaNotFoundError: nothing is skipped
                assert kubernetes_validate.validate(doc, f"{version}.0", strict=True) == version
                checked += 1
        elif name.startswith("kserve"):
            for doc in docs:
                validate_kserve(doc)
                checked += 1
        else:
            assert name == "compose.yaml" and len(docs) == 1
            for base_dir in (None, "/srv/elsewhere"):
                proc = compose_config(text, base_dir)
                assert proc.returncode == 0, proc.stderr
            checked += 1
    assert checked == total > 0 and len(files) >= len(plan.deploy.targets)


@pytest.mark.parametrize(
    ("case", "version", "field"),
    [("shared-image", "1.30.0", None), ("shared-image", "1.35.0", "hostNetwork2"), ("baked", "1.27.0", "hostNetwork2")],
)
def test_kubernetes_validate_fails_on_a_broken_deployment(case: str, version: str, field: str | None) -> None:
    deployment = one(case, "Deployment")  # valid at its claimed version (above); 1.30 had no image volumes
    if field:
        pod_spec(deployment)[field] = True
    with pytest.raises(kubernetes_validate.ValidationError, match=f"'{field or 'image'}' was unexpected"):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("kind", ["InferenceService", "LLMInferenceService"])
def test_the_kserve_oracle_rejects_an_unknown_container_field(kind: str) -> None:
    doc = one("shared-vllm-image", kind)
    pod_spec(doc)["containers"][0]["hostNetwork"] = True
    with pytest.raises(jsonschema.ValidationError, match="hostNetwork"):
        validate_kserve(doc)


def test_docker_compose_rejects_an_option_it_does_not_know(compose_config) -> None:
    compose = rendered("shared-vllm-cuda-image")["compose.yaml"][0]
    compose["services"]["shared"]["gpus"] = "all"
    proc = compose_config(yaml.safe_dump(compose))
    assert proc.returncode == 1 and "gpus" in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", ["shared-image", "shared-vllm-image", "shared-vllm-cuda-image"])
def test_an_image_volume_mounts_the_pinned_base_read_only(case: str) -> None:
    spec = pod_spec(one(case, "Deployment"))
    assert MOUNT in spec["containers"][0]["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == "base")
    assert volume["image"] == {"reference": MODEL, "pullPolicy": "IfNotPresent"}
    assert k8s_version(render_manifests(*CASES[case])["kubernetes.yaml"]) == "1.35"
    compose = rendered(case)["compose.yaml"][0]
    server = compose["services"]["shared"]
    assert compose["services"]["base"]["image"] == MODEL and compose["volumes"]["base"]["name"].startswith("packager")
    assert server["depends_on"] == {"base": {"condition": "service_completed_successfully"}}
    assert server["environment"] == {"PACKAGER_VERIFY_BASE": "quick"}
    assert server["volumes"] == [{"type": "volume", "source": "base", "target": "/base", "read_only": True}]


@pytest.mark.parametrize("case", ["shared", "shared-pvc-loader", "shared-vllm-pvc"])
def test_a_claim_is_mounted_read_only_and_filled_by_a_loader_only_from_a_model_image(case: str) -> None:
    claim = one(case, "PersistentVolumeClaim")
    assert "ReadOnlyMany" in claim["spec"]["accessModes"]
    spec = pod_spec(one(case, "Deployment"))
    assert MOUNT in spec["containers"][0]["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == "base")
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    jobs = [d for d in rendered(case)["kubernetes.yaml"] if d["kind"] == "Job"]
    assert len(jobs) == (1 if CASES[case][0].image.model_image else 0)
    for job in jobs:
        loader = pod_spec(job)
        assert loader["containers"][0]["image"] == MODEL
        assert loader["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert [d["kind"] for d in rendered(case)["kubernetes.yaml"]][-2:] == ["Deployment", "Service"]


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_as_the_image_user_and_probes_health(case: str) -> None:
    pods = [d for docs in rendered(case).values() for d in docs if d.get("kind") in POD_KINDS]
    assert len(pods) >= len(CASES[case][0].deploy.targets) - ("compose" in CASES[case][0].deploy.targets)
    for doc in pods:
        spec = pod_spec(doc)
        if doc["kind"] == "Job":  # the loader writes the claim once as root (NFS-like claims ignore fsGroup)
            assert spec["securityContext"] == {"runAsUser": 0}
            continue
        assert spec["securityContext"] == {"runAsUser": UID, "runAsGroup": UID, "fsGroup": UID, "runAsNonRoot": True}
        replicas = spec["minReplicas"] if doc["kind"] == "InferenceService" else doc["spec"]["replicas"]
        assert replicas == CASES[case][0].deploy.replicas
        container = spec["containers"][0]
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
        assert len(probes) >= 2 and all(p["httpGet"]["path"] == "/health" for p in probes)
        assert {p["httpGet"]["port"] for p in probes} <= {"http", container["ports"][0]["containerPort"]}
        assert container["ports"][0]["name"] == "http"
        assert env_of(doc).get("PACKAGER_VERIFY_BASE") == ("quick" if CASES[case][0].image.layout == "shared" else None)


@pytest.mark.parametrize(("case", "uri"), BASE_URIS.items())
def test_kserve_is_told_where_the_base_is(case: str, uri: str) -> None:
    isvc = one(case, "InferenceService")
    assert env_of(isvc)["STORAGE_URI"] == uri and env_of(isvc)["PACKAGER_BASE_DIR"] == "/mnt/models"
    llm = [d for docs in rendered(case).values() for d in docs if d.get("kind") == "LLMInferenceService"]
    assert len(llm) == (1 if CASES[case][0].image.engine == "vllm" else 0)
    for doc in llm:
        assert doc["spec"]["model"] == {"uri": uri, "name": "acme/tiny-llama"}
        assert env_of(doc)["PACKAGER_BASE_DIR"] == "/mnt/models"
        assert doc["metadata"]["annotations"]["packager.io/adapters"] == "sql,chat"


@pytest.mark.parametrize("case", ["baked", "baked-vllm-cuda"])
def test_a_baked_image_has_no_base_volume_and_no_llm_inference_service(case: str) -> None:
    files = rendered(case)
    assert [d["kind"] for d in files["kubernetes.yaml"]] == ["Deployment", "Service"]
    volumes = [v["name"] for d in files["kubernetes.yaml"][:1] for v in pod_spec(d).get("volumes", [])]
    assert "base" not in volumes and "STORAGE_URI" not in env_of(one(case, "InferenceService"))
    assert set(files["compose.yaml"][0]) == {"services"} and set(files["compose.yaml"][0]["services"]) == {"demo"}
    assert "volumes" not in files["compose.yaml"][0]["services"]["demo"] and "kserve-llm.yaml" not in files


def test_gpus_are_asked_for_only_on_cuda() -> None:
    reservation = {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    for case, cuda in (("shared-vllm-cuda-image", True), ("baked-vllm-cuda", True), ("shared-vllm-image", False)):
        for kind in ("Deployment", "InferenceService"):
            limits = pod_spec(one(case, kind))["containers"][0].get("resources", {}).get("limits", {})
            assert limits == ({"nvidia.com/gpu": "1"} if cuda else {}), (case, kind)
        service = list(rendered(case)["compose.yaml"][0]["services"].values())[-1]  # the server comes last
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        assert devices == ([reservation] if cuda else None), case


def test_the_bind_mount_defaults_to_the_base_folder_and_follows_packager_base_dir(compose_config) -> None:
    text = render_manifests(*CASES["shared"])["compose.yaml"]
    for base_dir, expected in ((None, "/srv/models/tiny-llama"), ("/data/base", "/data/base")):
        proc = compose_config(text, base_dir, quiet=False)
        volume = yaml.safe_load(proc.stdout)["services"]["shared"]["volumes"][0]
        assert volume == {"type": "bind", "source": expected, "target": "/base", "read_only": True}


def test_an_image_volume_needs_a_model_image() -> None:
    with pytest.raises(UserInputError, match="package-base"):
        render_manifests(deploy(plans.shared(), volume="image"), REF)


@pytest.mark.parametrize(
    ("spec", "layout", "words"),
    [
        (DeploySpec(("helm",)), "shared", "unknown --target 'helm'"),
        (DeploySpec(("compose",), "nfs"), "shared", "unknown --base-volume 'nfs'"),
        (DeploySpec(("compose",), replicas=-1), "baked", "out of range"),
        (DeploySpec(("compose",), replicas=1001), "shared", "out of range"),
        (DeploySpec(("compose", "kubernetes"), "pvc"), "shared", "does not apply to --target compose"),
        (DeploySpec(("kubernetes",), "bind"), "shared", "does not apply to --target kubernetes"),
        (DeploySpec(("kserve",), "volume"), "shared", "does not apply to --target kserve"),
    ],
)
def test_check_deploy_refuses(spec: DeploySpec, layout: str, words: str) -> None:
    with pytest.raises(UserInputError, match=re.escape(words)):
        check_deploy(spec, layout)


def test_check_deploy_accepts_what_applies() -> None:
    for spec in (DeploySpec(DEPLOY_TARGETS), DeploySpec(("kubernetes", "kserve"), "pvc", 0), DeploySpec((), "bind")):
        check_deploy(spec, "shared")
    check_deploy(DeploySpec(("compose",), "pvc", 1000), "baked")  # a baked image mounts no base
