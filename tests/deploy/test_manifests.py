"""Rendered deployment manifests: whole-file goldens, every document validated offline (kubernetes-validate at
the version each file claims, the KServe oracle, docker-compose), proof that those checks can fail, semantics."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from packager.deploy.render import manifest_names, render_manifests
from packager.deploy.targets import TARGETS
from packager.deploy.values import check_deploy
from packager.errors import UserInputError
from packager.plan import DeploySpec, PackagePlan
from packager.runtime.config import VllmSettings
from tests import plans
from tests.deploy.kserve_oracle import validate_kserve

DEPLOY_TARGETS = tuple(TARGETS)
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


def deploy(plan: PackagePlan, targets=DEPLOY_TARGETS, volume="auto", replicas=1, key="", most=0) -> PackagePlan:
    """The plan asking for these manifests (`key`: the --api-key-secret, and a NetworkPolicy; `most`: autoscaling
    up to that many)."""
    spec = DeploySpec(tuple(targets), volume, replicas, most, api_key_secret=key, network_policy=bool(key))
    return dataclasses.replace(plan, deploy=spec)


def on_vllm(plan: PackagePlan, device: str = "cpu", **image) -> PackagePlan:
    """The plan served by vLLM (from vLLM's CUDA image on cuda); `image`: more ImagePlan changes."""
    name = plan.base.label_id if plan.image.layout == "shared" else "demo"
    settings = VllmSettings("bfloat16", 4096, name, 16, 3, device)
    if device == "cuda":
        image = {"base_image": "vllm/vllm-openai:v0.32.0", "device": "cuda", **image}
    return plans.with_image(plans.with_runtime(plan, engine="vllm", vllm=settings), **image)


def sized(plan: PackagePlan, model: str, **target) -> PackagePlan:
    """The plan sized for a Llama-3.1 of that size in bf16 on 80 GiB GPUs at 131072 tokens (packager/sizing), vLLM
    set to match."""
    from packager.sizes import Target
    from packager.sizing import size_model
    from tests.sparse_models import llama3_config, llama3_tensors

    sizing = size_model(llama3_config(model), llama3_tensors(model), Target("cuda", **target), 131072)
    vllm = dataclasses.replace(
        plan.image.runtime.vllm, tensor_parallel_size=sizing.tensor_parallel,
        pipeline_parallel_size=sizing.nodes, gpu_memory_utilization=0.9,
    )  # fmt: skip
    return dataclasses.replace(plans.with_runtime(plan, vllm=vllm), sizing=sizing)


# case -> (plan, image reference); the first ones are pinned whole-file by goldens
GOLDEN_CASES = {
    "baked": (deploy(plans.baked()), BAKED_REF),
    "shared": (deploy(plans.shared()), REF),  # auto without a model image: compose bind, kubernetes/kserve pvc
    "shared-pvc-loader": (deploy(plans.with_image(plans.shared(), model_image=MODEL), ["kubernetes"], "pvc"), REF),
    "shared-volume": (deploy(plans.shared(), ["compose"], "volume"), REF),
    "shared-vllm-image": (deploy(on_vllm(plans.shared(), model_image=MODEL)), REF),
    "shared-vllm-cuda-image": (deploy(on_vllm(plans.shared(), "cuda", model_image=MODEL), key="llm-key"), REF),
    "baked-api-key": (deploy(plans.baked(), key="llm-key", replicas=2, most=8), BAKED_REF),
    "shared-405b-multinode": (
        deploy(sized(on_vllm(plans.shared(), "cuda", model_image=MODEL), "405b"), ["kserve"]),
        REF,
    ),
}
CASES = {
    **GOLDEN_CASES,
    "shared-image": (deploy(plans.with_image(plans.shared(), model_image=MODEL)), REF),
    "shared-vllm-pvc": (deploy(on_vllm(plans.shared()), ["kubernetes", "kserve"], "pvc", replicas=0), REF),
    "shared-vllm-cuda-kserve-pvc": (deploy(on_vllm(plans.shared(), "cuda", model_image=MODEL), ["kserve"], "pvc"), REF),
    "baked-vllm-cuda": (deploy(on_vllm(plans.baked(), "cuda"), replicas=3), BAKED_REF),
    "shared-70b-cuda": (deploy(sized(on_vllm(plans.shared(), "cuda", model_image=MODEL), "70b"), replicas=3), REF),
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


def one(case: str, kind: str, file: str | None = None) -> dict[str, Any]:
    """The one document of this kind among the case's manifests (or in `file`)."""
    found = [d for name, docs in rendered(case).items() for d in docs if d.get("kind") == kind and file in (None, name)]
    assert len(found) == 1, (case, kind, len(found))
    return found[0]


def kserve_service(case: str) -> dict[str, Any]:
    """The one KServe service the kserve target writes: an InferenceService, or an LLMInferenceService where vLLM
    serves adapters on a shared base at fixed replicas, or the model spans nodes."""
    kinds = ("InferenceService", "LLMInferenceService")
    found = [d for name, docs in rendered(case).items() if name.startswith("kserve") for d in docs
             if d.get("kind") in kinds]  # fmt: skip
    assert len(found) == 1 and len([n for n in rendered(case) if n.startswith("kserve")]) == 1, case
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Deployment, Job, InferenceService or LLMInferenceService."""
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return doc["spec"]["predictor"] if doc["kind"] == "InferenceService" else doc["spec"]["template"]


def env_of(doc: dict[str, Any]) -> dict[str, str]:
    """The serving container's environment, by name."""
    return {e["name"]: e.get("value", "") for e in pod_spec(doc)["containers"][0].get("env", [])}


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
            for doc in docs:  # KServe's kinds by the oracle; a core kind beside them (NetworkPolicy) as above
                if doc["kind"] in ("InferenceService", "LLMInferenceService"):
                    validate_kserve(doc)
                else:
                    assert kubernetes_validate.validate(doc, "1.27.0", strict=True) == "1.27"
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


@pytest.mark.parametrize(("case", "kind"), [("shared-image", "InferenceService"),
                                            ("shared-vllm-image", "LLMInferenceService")])  # fmt: skip
def test_the_kserve_oracle_rejects_an_unknown_container_field(case: str, kind: str) -> None:
    doc = one(case, kind)
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
    """One access mode (ReadWriteMany: the loader writes once, the servers mount it read-only), and every target's
    file holds the claim and loader it refers to (issue 24: kserve.yaml named a claim only kubernetes.yaml made)."""
    claim = one(case, "PersistentVolumeClaim", "kubernetes.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for kserve in (docs for name, docs in rendered(case).items() if name.startswith("kserve")):
        assert [d for d in kserve if d["kind"] in ("PersistentVolumeClaim", "Job")] == [
            d for d in rendered(case)["kubernetes.yaml"] if d["kind"] in ("PersistentVolumeClaim", "Job")
        ], "kserve's file is whole by itself"
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
        assert spec["securityContext"] == {
            "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }  # fmt: skip
        wanted = CASES[case][0].deploy
        if doc["kind"] == "Deployment" and wanted.max_replicas:  # the HPA owns the count
            assert "replicas" not in doc["spec"]
        else:
            replicas = spec["minReplicas"] if doc["kind"] == "InferenceService" else doc["spec"]["replicas"]
            assert replicas == wanted.replicas
        container = spec["containers"][0]
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
        assert len(probes) >= 2 and all(p["httpGet"]["path"] == "/health" for p in probes)
        assert {p["httpGet"]["port"] for p in probes} <= {"http", container["ports"][0]["containerPort"]}
        assert container["ports"][0]["name"] == "http"
        assert env_of(doc).get("PACKAGER_VERIFY_BASE") == ("quick" if CASES[case][0].image.layout == "shared" else None)


@pytest.mark.parametrize(("case", "uri"), BASE_URIS.items())
def test_kserve_is_told_where_the_base_is(case: str, uri: str) -> None:
    doc = kserve_service(case)
    assert env_of(doc)["PACKAGER_BASE_DIR"] == "/mnt/models"
    if doc["kind"] == "InferenceService":
        assert env_of(doc)["STORAGE_URI"] == uri and CASES[case][0].image.engine != "vllm"
    else:
        assert doc["spec"]["model"] == {"uri": uri, "name": "acme/tiny-llama"}
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
    reservation = {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    for case, cuda in (("shared-vllm-cuda-image", True), ("baked-vllm-cuda", True), ("shared-vllm-image", False)):
        for doc in (one(case, "Deployment"), kserve_service(case)):
            kind = doc["kind"]
            resources = pod_spec(doc)["containers"][0]["resources"]
            for part in ("requests", "limits"):
                assert resources[part].get("nvidia.com/gpu") == ("1" if cuda else None), (case, kind)
            assert resources["requests"]["memory"].endswith("Gi") and resources["requests"]["cpu"] == "2"
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


def test_gpu_counts_memory_and_shm_follow_the_sizing() -> None:
    """70B bf16 on 80 GiB GPUs: tensor parallel 4 (packager/sizing): 4 GPUs, /dev/shm 8 GiB, in every target."""
    for kind in ("Deployment", "LLMInferenceService"):
        spec = pod_spec(one("shared-70b-cuda", kind))
        resources = spec["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "4", kind
        # host memory: 2 GiB for the API server and each of the 4 GPU workers, plus the 8 GiB /dev/shm
        assert resources["requests"] == {"cpu": "6", "memory": "18Gi", "nvidia.com/gpu": "4"}, kind
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}, kind
    assert one("shared-70b-cuda", "LLMInferenceService")["spec"]["parallelism"] == {"tensor": 4}
    service = list(rendered("shared-70b-cuda")["compose.yaml"][0]["services"].values())[-1]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4 and service["shm_size"] == "8g"


def test_a_405b_spans_nodes_as_a_multi_node_llminferenceservice() -> None:
    document = one("shared-405b-multinode", "LLMInferenceService")
    assert document["spec"]["parallelism"] == {"tensor": 8, "pipeline": 2}
    for part in ("template", "worker"):
        assert document["spec"][part]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8", part


@pytest.mark.parametrize(("targets", "layout"), [(["kserve", "compose"], "shared"), (["kserve"], "baked")])
def test_a_multi_node_model_elsewhere_is_refused_in_one_line(targets, layout) -> None:
    from packager.deploy.values import check_nodes

    plan = on_vllm(plans.shared() if layout == "shared" else plans.baked(), "cuda", model_image=MODEL)
    with pytest.raises(UserInputError, match=r"spans 2 nodes .* use --layout shared --target kserve"):
        check_nodes(deploy(sized(plan, "405b"), targets))


def test_the_oracle_refuses_a_parallelism_it_does_not_know() -> None:
    document = one("shared-405b-multinode", "LLMInferenceService")
    document["spec"]["parallelism"]["tensr"] = 8
    with pytest.raises(jsonschema.ValidationError, match="tensr"):
        validate_kserve(document)
    document["spec"]["parallelism"] = {"tensor": 0}
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(document)


@pytest.mark.parametrize("case", ["shared-vllm-cuda-image", "baked-api-key"])
def test_every_pod_takes_the_api_key_from_the_named_secret(case) -> None:
    for doc in (one(case, "Deployment"), kserve_service(case)):
        kind = doc["kind"]
        env = pod_spec(doc)["containers"][0]["env"]
        key = next(e for e in env if e["name"] == "PACKAGER_API_KEY")
        assert key["valueFrom"] == {"secretKeyRef": {"name": "llm-key", "key": "api-key"}}, kind
    service = list(rendered(case)["compose.yaml"][0]["services"].values())[-1]
    assert service["env_file"] == ["llm-key.env"]
    assert all("PACKAGER_API_KEY" not in str(d) for d in rendered("shared")["kubernetes.yaml"]), "no key: open"


@pytest.mark.parametrize("name", ["Bad_Name", "x\nkind: Secret", "a b"])
def test_a_secret_name_that_is_not_one_is_refused(name) -> None:
    with pytest.raises(UserInputError):
        check_deploy(DeploySpec(("kubernetes",), "auto", 1, api_key_secret=name), "shared")


def _serving_pods(case: str) -> list[tuple[str, dict[str, Any]]]:
    """Every serving pod spec of the case (the base loader Job is the documented exception: it runs as root once,
    since NFS-like claims ignore fsGroup)."""
    pods = []
    for docs in rendered(case).values():
        for doc in docs:
            if doc.get("kind") in ("Deployment", "InferenceService", "LLMInferenceService"):
                pods.append((doc["kind"], pod_spec(doc)))
            if doc.get("kind") == "LLMInferenceService" and "worker" in doc["spec"]:
                pods.append(("worker", doc["spec"]["worker"]))
    return pods


@pytest.mark.parametrize("case", sorted(c for c in CASES if set(CASES[c][0].deploy.targets) - {"compose"}))
def test_every_serving_pod_meets_the_restricted_profile(case) -> None:
    from tests.deploy.restricted import violations

    pods = _serving_pods(case)
    assert pods, case
    for kind, pod in pods:
        assert violations(pod) == [], (case, kind)
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/tmp" in mounts and pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_restricted_check_fails_on_a_pod_that_breaks_it() -> None:
    import copy

    from tests.deploy.restricted import violations

    pod = copy.deepcopy(pod_spec(one("shared-70b-cuda", "Deployment")))
    pod["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    pod["securityContext"].pop("seccompProfile")
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    found = violations(pod)
    assert "server: capabilities do not drop ALL" in found and "server: adds capability SYS_ADMIN" in found
    assert "volume host: type hostPath" in found and any("seccompProfile" in v for v in found)


def test_compose_locks_the_server_down_as_a_restricted_pod() -> None:
    service = list(rendered("shared-vllm-image")["compose.yaml"][0]["services"].values())[-1]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"] and service["tmpfs"] == ["/tmp"]
    assert service["security_opt"] == ["no-new-privileges:true"]


def test_autoscaling_renders_an_hpa_on_the_queue_and_keda_for_kserve() -> None:
    hpa = one("baked-api-key", "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    target = {"type": "AverageValue", "averageValue": "4"}
    assert hpa["metrics"] == [
        {"type": "Pods", "pods": {"metric": {"name": "packager_num_requests_running"}, "target": target}}
    ]
    template = one("baked-api-key", "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/scrape"] == "true" and template["prometheus.io/path"] == "/metrics"
    isvc = one("baked-api-key", "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    query = predictor["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    assert query == 'sum(packager:num_requests_running{pod=~"demo-predictor-.*"})'
    assert "HorizontalPodAutoscaler" not in str(rendered("shared")), "fixed replicas: no autoscaler"


@pytest.mark.parametrize("spec", [(0, 4), (5, 2), (1, 1001)])
def test_a_replica_range_that_is_not_one_is_refused(spec) -> None:
    with pytest.raises(UserInputError, match="MIN:MAX"):
        check_deploy(DeploySpec(("kubernetes",), "auto", spec[0], max_replicas=spec[1]), "shared")


def test_replicas_of_a_shared_vllm_image_are_routed_by_adapter() -> None:
    """Several replicas: the LLMInferenceService's router (gateway, route, the inference scheduler) picks the one
    with the request's adapter loaded; one replica needs no router."""
    routed = one("shared-70b-cuda", "LLMInferenceService")["spec"]
    assert routed["router"] == {"route": {}, "gateway": {}, "scheduler": {}} and routed["replicas"] == 3
    assert "router" not in one("shared-vllm-image", "LLMInferenceService")["spec"]
    assert "Routed by adapter" in render_manifests(*CASES["shared-70b-cuda"])["kserve-llm.yaml"]


def test_a_broken_autoscaler_fails_validation() -> None:
    hpa = one("baked-api-key", "HorizontalPodAutoscaler")
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValu"] = "4"
    with pytest.raises(kubernetes_validate.ValidationError, match="'averageValu' was unexpected"):
        kubernetes_validate.validate(hpa, "1.27.0", strict=True)


def test_the_network_policy_admits_only_labelled_clients_to_the_port() -> None:
    for file, selector in (
        ("kubernetes.yaml", "app.kubernetes.io/name"),
        ("kserve.yaml", "serving.kserve.io/inferenceservice"),
    ):
        policy = next(d for d in rendered("baked-api-key")[file] if d["kind"] == "NetworkPolicy")["spec"]
        assert policy["podSelector"] == {"matchLabels": {selector: "demo"}} and policy["policyTypes"] == ["Ingress"]
        assert policy["ingress"] == [{"from": [
            {"podSelector": {"matchLabels": {"packager.io/client": "true"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},  # Prometheus
        ], "ports": [{"port": 8000, "protocol": "TCP"}]}]  # fmt: skip
    assert "NetworkPolicy" not in str(rendered("shared")), "opt-in"


def test_every_kubernetes_target_gets_the_policy_gpu_tolerations_and_a_startup_probe_from_the_plan() -> None:
    """Issue 24: kserve-llm.yaml got no NetworkPolicy, GPU pods no toleration for the usual nvidia.com/gpu taint,
    KServe pods no startup probe (liveness waited 600 s instead)."""
    case = "shared-70b-cuda"
    plan = CASES[case][0]
    policy_plan = dataclasses.replace(plan, deploy=dataclasses.replace(plan.deploy, network_policy=True))
    docs = {n: documents(t) for n, t in render_manifests(policy_plan, REF).items()}
    llm_policy = next(d for d in docs["kserve-llm.yaml"] if d["kind"] == "NetworkPolicy")
    assert llm_policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "shared",
        "app.kubernetes.io/part-of": "llminferenceservice",
    }  # KServe's labels
    for doc in (one(case, "Deployment"), one(case, "LLMInferenceService")):
        spec = pod_spec(doc)
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        probe = spec["containers"][0]["startupProbe"]
        # 141 GB of weights at 200 MB/s and vLLM's own start, twice over, in 10 s probes
        assert probe["failureThreshold"] == math.ceil(2 * (180 + plan.sizing.weights_bytes / 200e6) / 10) > 60
        assert "initialDelaySeconds" not in spec["containers"][0]["livenessProbe"]
    assert "tolerations" not in pod_spec(one("shared-vllm-image", "Deployment")), "CPU pods tolerate nothing"


def test_autoscaling_named_with_compose_is_refused_and_kserve_autoscales_an_inference_service() -> None:
    with pytest.raises(UserInputError, match=r"--target compose \(compose.yaml, one host\) runs a fixed number"):
        check_deploy(DeploySpec(("compose", "kubernetes"), "auto", 1, 4), "shared")
    check_deploy(DeploySpec(("compose", "kubernetes"), "auto", 1, 4, chosen=False), "shared")  # every target, default
    plan = CASES["shared-vllm-image"][0]
    scaled = dataclasses.replace(plan, deploy=dataclasses.replace(plan.deploy, targets=("kserve",), max_replicas=4))
    names = list(render_manifests(scaled, REF))
    assert names == ["kserve.yaml"], "an LLMInferenceService does not autoscale: the InferenceService does"


def test_a_cluster_never_gets_an_unqualified_image_and_pulls_a_tag_each_start() -> None:
    """Issue 24: `image: "packager/adapter:latest"` resolves to Docker Hub's `packager/` namespace. Kubernetes and
    KServe get the registry the tag names, else a placeholder that cannot pull and says why; compose, on the
    build host, keeps the local name. A digest is pulled once, a tag each start."""
    plan = dataclasses.replace(CASES["baked"][0], deploy=DeploySpec(DEPLOY_TARGETS))
    unqualified = {n: documents(t) for n, t in render_manifests(plan, "acme/demo:1").items()}
    server = pod_spec(next(d for d in unqualified["kubernetes.yaml"] if d["kind"] == "Deployment"))["containers"][0]
    assert server["image"] == "registry.invalid/acme/demo:1" and server["imagePullPolicy"] == "Always"
    assert "# The image tag names no registry" in render_manifests(plan, "acme/demo:1")["kserve.yaml"]
    assert unqualified["compose.yaml"][0]["services"]["demo"]["image"] == "acme/demo:1"
    pinned = f"127.0.0.1:5000/acme/demo@sha256:{'ab' * 32}"
    texts = render_manifests(plan, pinned)
    for name in ("kubernetes.yaml", "kserve.yaml"):
        container = pod_spec(next(d for d in documents(texts[name]) if d["kind"] in POD_KINDS))["containers"][0]
        assert container["image"] == pinned and container["imagePullPolicy"] == "IfNotPresent", name
        assert "names no registry" not in texts[name]
