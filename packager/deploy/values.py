"""What the manifests are made of, derived from the plan and where the image went: names, image references, how
the base reaches each pod, GPU, probes, user. Pure; each value still passes a filter inside its template."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from packager import __version__
from packager.deploy.targets import TARGETS, get_target
from packager.errors import UserInputError
from packager.image.filters import dns_label, image_ref
from packager.image.paths import BASE_MOUNT
from packager.image.reference import PLACEHOLDER_REGISTRY, cluster_reference, names_registry
from packager.plan import BASE_VOLUMES, DeploySpec, ImagePlan, PackagePlan, files_key
from packager.sizes import GIB, Sizing

RUNTIME_UID = 10001  # the USER of every packager image (Dockerfile templates)
KSERVE_MODEL_DIR = "/mnt/models"  # where KServe puts what STORAGE_URI / spec.model.uri names
# The lowest Kubernetes each shape needs: ImageVolume is on by default from 1.35 (beta; GA in 1.36), and
# `subPath` into an image volume needs 1.33; everything else is stable API long before 1.27.
K8S_MIN = {"image": "1.35", "pvc": "1.27", "none": "1.27"}
QUEUE_TARGET = 4  # requests waiting per pod before another is added
QUEUE_METRICS = {"vllm": "vllm:num_requests_waiting", "packager": "packager:num_requests_running"}
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"  # the Prometheus Operator's default Service
TAINT_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# a pod's start, for its startup probe: the engine's own start, then the weights read at LOAD_BYTES_PER_SECOND
# (a network volume or an image layer; a local NVMe is faster); probed every 10 s
ENGINE_START_SECONDS = {"vllm": 180, "packager": 60}  # vLLM: imports, profiling, CUDA graphs; packager: imports
LOAD_BYTES_PER_SECOND = 200 * 10**6


def check_nodes(plan: PackagePlan) -> DeploySpec:
    """A model that spans nodes (pipeline stages) deploys only as a multi-node KServe LLMInferenceService, which
    serves a mounted base: the targets to render then (only kserve, where the user named none), refused in one
    line at plan time where the layout or a named target cannot."""
    nodes = plan.sizing.nodes if plan.sizing else 1
    if nodes == 1:
        return plan.deploy
    if plan.deploy.max_replicas:
        raise UserInputError(
            f"the model spans {nodes} nodes, and a multi-node LLMInferenceService runs a fixed number of replicas "
            f"(KServe does not autoscale it); pass --replicas {plan.deploy.replicas} (or another fixed count)"
        )
    others = [t for t in plan.deploy.targets if not get_target(t).multi_node] if plan.deploy.chosen else []
    if others or _image(plan).layout != "shared":
        what = f"--target {others[0]}" if others else "--layout baked"
        raise UserInputError(
            f"the model spans {nodes} nodes ({plan.sizing.layout}), and {what} runs on one: compose is one host, "
            "plain Kubernetes would need a LeaderWorkerSet (no offline schema to validate it), and KServe's "
            f"multi-node LLMInferenceService serves a mounted base; use --layout shared --target {_spanning()}"
        )
    return dataclasses.replace(plan.deploy, targets=tuple(t.name for t in TARGETS.values() if t.multi_node))


def _spanning() -> str:
    return " or ".join(t.name for t in TARGETS.values() if t.multi_node)


def check_deploy(spec: DeploySpec, layout: str) -> None:
    """Refuse unknown targets, volumes and replica counts before any heavy work."""
    targets = [get_target(t) for t in spec.targets]  # an unknown one, refused naming the registry's
    if spec.base_volume not in BASE_VOLUMES:
        raise UserInputError(f"unknown --base-volume {spec.base_volume!r}; use one of {', '.join(BASE_VOLUMES)}")
    if not 0 <= spec.replicas <= 1000:
        raise UserInputError(f"--replicas {spec.replicas} is out of range; use 0-1000")
    if spec.max_replicas and not 1 <= spec.replicas <= spec.max_replicas <= 1000:
        raise UserInputError(
            f"--replicas {spec.replicas}:{spec.max_replicas} is not MIN:MAX with 1 <= MIN <= MAX <= 1000 (scaling to "
            "zero is not offered: the cold start is minutes); e.g. 1:8"
        )
    if spec.api_key_secret:
        dns_label(spec.api_key_secret)  # a Secret name, and a file name compose reads: one line if it is neither
    dns_label(spec.metrics_namespace)
    if spec.gpu_toleration and not TAINT_KEY.fullmatch(spec.gpu_toleration):
        raise UserInputError(f"--gpu-toleration {spec.gpu_toleration!r} is not a taint key (e.g. nvidia.com/gpu)")
    fixed = [t for t in targets if not t.autoscales]
    if spec.max_replicas and spec.chosen and fixed:
        scaled = " and ".join(t.name for t in TARGETS.values() if t.autoscales)
        raise UserInputError(
            f"--replicas {spec.replicas}:{spec.max_replicas} autoscales {scaled} pods, and --target {fixed[0].name} "
            f"({fixed[0].describe}) runs a fixed number; drop --target {fixed[0].name}, or pass a fixed --replicas"
        )
    if layout == "shared" and spec.base_volume != "auto":
        for target in targets:
            if spec.base_volume not in target.volumes:
                raise UserInputError(
                    f"--base-volume {spec.base_volume} does not apply to --target {target.name}; "
                    f"use one of {', '.join(target.volumes)} (or auto)"
                )


def base_volume(plan: PackagePlan, target: str) -> str:
    """How the base reaches this target's pods: none (baked), else the plan's choice, auto resolved."""
    image = _image(plan)
    if image.layout != "shared":
        return "none"
    chosen = plan.deploy.base_volume
    if chosen == "auto":
        chosen = get_target(target).default_volume(bool(image.model_image))
    if chosen == "image" and not image.model_image:
        raise UserInputError(
            "--base-volume image needs the base as a pushed image; run `packager package-base --push` first "
            "(it is then found by itself) or pass --base-model-image REPO@sha256:..."
        )
    return chosen


def k8s_name(plan: PackagePlan) -> str:
    """The Deployment/Service/InferenceService name: the image's service name as an RFC 1123 label."""
    served = _image(plan).runtime.served_name or "packager"
    name = re.sub(r"[^a-z0-9-]+", "-", served.lower()).strip("-")
    if name[:1].isdigit():  # Service and InferenceService names are RFC 1035 labels: a letter first
        name = f"packager-{name}"
    return dns_label(name[:40].strip("-") or "packager")


def manifest_values(plan: PackagePlan, reference: str, target: str) -> dict[str, Any]:
    """The values the `target` template renders: `reference` is the image (pinned by digest once pushed)."""
    image = _image(plan)
    volume = base_volume(plan, target)
    name = k8s_name(plan)
    if image.model_image and "@sha256:" not in image_ref(image.model_image):
        raise UserInputError(f"the base image {image.model_image!r} is not pinned by digest; give REPO@sha256:...")
    pinned, cluster = "@sha256:" in reference, get_target(target).cluster
    return {
        "packager_version": __version__,
        "name": name,
        "image": image_ref(cluster_reference(reference) if cluster else reference),
        "registry_unset": cluster and not names_registry(reference),
        "pull_policy": "IfNotPresent" if pinned else "Always",  # a tag may move: pull it each start
        "layout": image.layout,
        "engine": image.engine,
        "device": image.device,
        "port": image.port,
        "replicas": plan.deploy.replicas,
        "uid": RUNTIME_UID,
        "adapters": [s.name for s in plan.served],
        "base_id": plan.base.label_id,
        "base_volume": volume,
        "base_mount": BASE_MOUNT,
        "base_source": image.base_source,
        "model_image": image.model_image,
        "model_dir": KSERVE_MODEL_DIR,
        "claim": f"{name}-base",
        "claim_size": _claim_size(plan),
        "volume_name": f"packager-base-{_base_key(plan)}",
        "base_name": image.runtime.vllm.base_name if image.runtime.vllm else "",
        "api_key_secret": plan.deploy.api_key_secret,
        "network_policy": plan.deploy.network_policy,
        "max_replicas": plan.deploy.max_replicas,
        # the queue an autoscaler reads: the server's own metric, and as the Prometheus adapter exposes it
        "queue_metric_raw": QUEUE_METRICS[image.engine],
        "queue_metric": QUEUE_METRICS[image.engine].replace(":", "_"),
        "queue_target": QUEUE_TARGET,
        "prometheus_url": PROMETHEUS_URL,
        "start_failures": start_failures(plan),
        "metrics_namespace": plan.deploy.metrics_namespace,
        "gpu_toleration": plan.deploy.gpu_toleration,
        "placeholder_registry": PLACEHOLDER_REGISTRY,
        "k8s_min": K8S_MIN[volume] if volume in K8S_MIN else K8S_MIN["none"],
        **pod_resources(plan),
    }


def start_failures(plan: PackagePlan) -> int:
    """The startup probe's failures at 10 s a probe: the engine's start and the pod's weights read, doubled for
    margin, at least 30 (5 minutes)."""
    sizing = plan.sizing
    weights = sizing.weights_bytes // sizing.nodes if sizing else sum(f.size for f in plan.base.files)
    seconds = ENGINE_START_SECONDS[_image(plan).engine] + weights / LOAD_BYTES_PER_SECOND
    return max(30, math.ceil(2 * seconds / 10))


def pod_resources(plan: PackagePlan) -> dict[str, Any]:
    """What each pod asks the scheduler for, from the plan's sizing (a plan without one: the base's bytes plus
    the runtime, one GPU on cuda)."""
    sizing = plan.sizing
    if sizing is None:
        memory = sum(f.size for f in plan.base.files) + 2 * GIB
        sizing = Sizing(_image(plan).device, 0, 0, 0, None, memory_request_bytes=memory, memory_limit_bytes=memory)
    return {
        "gpus": sizing.gpus or 1,
        "tensor_parallel": sizing.tensor_parallel,
        "pipeline_parallel": sizing.pipeline_parallel,
        "cpu_request": sizing.cpu_request,
        "memory_request": _gi(sizing.memory_request_bytes),
        "memory_limit": _gi(max(sizing.memory_limit_bytes, sizing.memory_request_bytes)),
        "shm": _gi(sizing.shm_bytes),
    }


def _gi(size: int) -> str:
    """A Kubernetes quantity in whole GiB, rounded up."""
    return f"{max(1, math.ceil(size / GIB))}Gi"


def _image(plan: PackagePlan) -> ImagePlan:
    if plan.image is None:
        raise UserInputError("the plan has no image to deploy; plan it with `packager package` or `render`")
    return plan.image


def _claim_size(plan: PackagePlan) -> str:
    """The base's bytes plus a tenth, in whole GiB (a claim smaller than the base fails its loader Job)."""
    total = sum(f.size for f in plan.base.files)
    return f"{max(1, math.ceil(total * 1.1 / 2**30))}Gi"


def _base_key(plan: PackagePlan) -> str:
    """A short, stable key of the base's content, so two bases never share one named volume."""
    try:
        return files_key(plan.base.files)[:12]
    except ValueError:  # not hashed (a dry run): name the volume by the base instead
        return re.sub(r"[^a-z0-9]+", "-", plan.base.label_id.lower()).strip("-")[:24] or "base"
