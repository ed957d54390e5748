"""What the user asked of the manifests beside the image (the plan carries it; deploy/ renders it)."""

from __future__ import annotations

from dataclasses import dataclass

BASE_VOLUMES = ("auto", "image", "pvc", "bind", "volume")


@dataclass(frozen=True)
class DeploySpec:
    """Which manifests to write beside the image, and how a shared image's pods get the base: `image` (the pushed
    base-model image: an ImageVolume, KServe oci://, a compose volume filled from it), `pvc` (a claim filled by a
    loader Job), `bind` (a host folder), `volume` (a named volume you fill); auto: image when one was pushed."""

    targets: tuple[str, ...] = ()
    base_volume: str = "auto"
    replicas: int = 1
    max_replicas: int = 0  # autoscaling between replicas and this on queued requests (0: fixed replicas)
    api_key_secret: str = ""  # the Secret (compose: NAME.env) that gives every pod PACKAGER_API_KEY; "": no key
    network_policy: bool = False  # admit traffic to the serving port only from pods labelled packager.io/client
    chosen: bool = True  # the user named the targets (False: every target, by default)
    metrics_namespace: str = "monitoring"  # where Prometheus runs: the NetworkPolicy admits it to /metrics
    gpu_toleration: str = "nvidia.com/gpu"  # the taint GPU nodes carry that GPU pods tolerate ("": none)
