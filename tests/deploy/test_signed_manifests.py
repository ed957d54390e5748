"""A signed image's manifests: the signature mounted where the runtime reads it (compose, kubernetes), a
Kyverno ClusterPolicy requiring the signature; goldens, offline validation (kubernetes-validate, docker-compose,
Kyverno's CRD schema) and injection through the mounted texts."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from packager.deploy.render import ADMISSION_POLICY, Signature, render_manifests
from packager.runtime.signature import SIGNATURE_DIR
from tests import plans
from tests.deploy.kserve_oracle import validate_kserve
from tests.deploy.kyverno import validate_policy
from tests.deploy.test_manifests import (
    BAKED_REF,
    MODEL,
    REF,
    _golden,
    deploy,
    documents,
    k8s_version,
    on_vllm,
    pod_spec,
)

# a fixed P-256 public key (ec.derive_private_key(20261206, SECP256R1)), so the goldens do not move
PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJ+zBBx7DiZaz5ulzLTroZeDRR+di
8oXJx4vJ1jEt6f61zAUoyiL+BNfMOZJ4UOKM5I67yZ5JDcyq6HEQIBUF/w==
-----END PUBLIC KEY-----
"""
BUNDLE = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": {}}, indent=2)


@pytest.fixture()
def signature(tmp_path) -> Signature:
    (tmp_path / "model.sig").write_text(BUNDLE)
    (tmp_path / "key.pub").write_text(PUBLIC_KEY)
    return Signature(str(tmp_path / "model.sig"), str(tmp_path / "key.pub"))


CASES = {
    "signed-baked": (deploy(plans.baked(), ["compose", "kubernetes"]), BAKED_REF),
    "signed-shared": (deploy(plans.shared(), ["compose", "kubernetes", "kserve"]), REF),
    "signed-shared-vllm-llmisvc": (deploy(on_vllm(plans.shared(), model_image=MODEL), ["kserve"]), REF),
}


@pytest.mark.parametrize("case", CASES)
def test_signed_manifests_match_golden(case: str, signature: Signature) -> None:
    plan, reference = CASES[case]
    for name, text in render_manifests(plan, reference, signature).items():
        _golden(f"{case}.{name}", text)


@pytest.mark.parametrize("case", CASES)
def test_signed_manifests_validate_offline(case: str, signature: Signature, compose_config) -> None:
    plan, reference = CASES[case]
    files = render_manifests(plan, reference, signature)
    assert ADMISSION_POLICY in files
    if "kubernetes.yaml" in files:
        version = k8s_version(files["kubernetes.yaml"])
        for doc in documents(files["kubernetes.yaml"]):
            assert kubernetes_validate.validate(doc, f"{version}.0", strict=True) == version
    for name in (n for n in files if n.startswith("kserve")):
        for doc in documents(files[name]):
            if doc["kind"] in ("InferenceService", "LLMInferenceService"):
                validate_kserve(doc)
                mounts = pod_spec(doc)["containers"][0]["volumeMounts"]
                assert {"name": "signature", "mountPath": SIGNATURE_DIR, "readOnly": True} in mounts
            else:
                assert kubernetes_validate.validate(doc, "1.27.0", strict=True) == "1.27"
    assert "compose.yaml" not in files or compose_config(files["compose.yaml"], "/srv/base").returncode == 0
    (policy,) = documents(files[ADMISSION_POLICY])
    assert validate_policy(policy) == "valid"


def test_the_kyverno_schema_refuses_a_broken_policy(signature: Signature) -> None:
    plan, reference = CASES["signed-baked"]
    (policy,) = documents(render_manifests(plan, reference, signature)[ADMISSION_POLICY])
    rule = policy["spec"]["rules"][0]["verifyImages"][0]
    rule["imageReferences"] = rule["imageReferences"][0]  # a string where the CRD wants a list
    assert "must be array" in validate_policy(policy)


@pytest.mark.parametrize("case", ["signed-baked", "signed-shared"])
def test_the_deployment_mounts_the_signature_read_only_and_the_policy_holds_the_key(
    case: str, signature: Signature
) -> None:
    plan, reference = CASES[case]
    files = render_manifests(plan, reference, signature)
    docs = documents(files["kubernetes.yaml"])
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["data"] == {"model.sig": BUNDLE, "key.pub": PUBLIC_KEY}
    spec = pod_spec(next(d for d in docs if d["kind"] == "Deployment"))
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "signature")
    assert mount == {"name": "signature", "mountPath": SIGNATURE_DIR, "readOnly": True}
    assert {"name": "signature", "configMap": {"name": config_map["metadata"]["name"]}} in spec["volumes"]
    (policy,) = documents(files[ADMISSION_POLICY])
    rule = policy["spec"]["rules"][0]["verifyImages"][0]
    repository = reference.split("@")[0]
    assert rule["imageReferences"] == [f"{repository}:*", f"{repository}@*"] and rule["required"] is True
    assert rule["attestors"][0]["entries"][0]["keys"]["publicKeys"] == PUBLIC_KEY
    compose = documents(files["compose.yaml"])[0]
    binds = [v for s in compose["services"].values() for v in s.get("volumes", []) if v["target"] == SIGNATURE_DIR]
    assert binds == [{"type": "bind", "source": "./signature", "target": SIGNATURE_DIR, "read_only": True}]


def test_unsigned_manifests_mount_nothing_and_write_no_policy() -> None:
    plan, reference = CASES["signed-baked"]
    files = render_manifests(plan, reference)
    assert ADMISSION_POLICY not in files and "signature" not in files["kubernetes.yaml"]


def test_a_hostile_bundle_stays_one_string(tmp_path) -> None:
    hostile = 'x"\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\n'
    (tmp_path / "model.sig").write_text(hostile)
    (tmp_path / "key.pub").write_text(PUBLIC_KEY + "\nkind: Secret\n")
    plan, reference = CASES["signed-baked"]
    files = render_manifests(plan, reference, Signature(str(tmp_path / "model.sig"), str(tmp_path / "key.pub")))
    docs = documents(files["kubernetes.yaml"])
    assert [d["kind"] for d in docs].count("Secret") == 0
    assert next(d for d in docs if d["kind"] == "ConfigMap")["data"]["model.sig"] == hostile
    (policy,) = documents(files[ADMISSION_POLICY])
    assert policy["kind"] == "ClusterPolicy"
