"""The Kubernetes Pod Security Standards' *restricted* profile (which includes *baseline*), checked field by field
on a pod spec, as https://kubernetes.io/docs/concepts/security/pod-security-standards/ lists its controls:
no host namespaces, ports or paths, no privileged containers, capabilities dropped to ALL (adding at most
NET_BIND_SERVICE), no privilege escalation, non-root (runAsNonRoot, no runAsUser 0), seccomp RuntimeDefault or
Localhost, the default /proc mount, no unsafe sysctls, only the volume types it allows (`image`: allowed with
ImageVolume, as the Kubernetes releases that carry it admit it under restricted). Returns every violation."""

from __future__ import annotations

from typing import Any

VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                "secret", "image"}  # fmt: skip
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}  # fmt: skip


def violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile `pod` (a PodSpec) breaks, in words; empty when it meets them all."""
    found = [f"spec.{key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"volume {v.get('name')}: type {t}" for v in pod.get("volumes", []) for t in v if t != "name"
              and t not in VOLUME_TYPES]  # fmt: skip
    found += [f"sysctl {s['name']}" for s in pod.get("securityContext", {}).get("sysctls", [])
              if s["name"] not in SAFE_SYSCTLS]  # fmt: skip
    pod_context = pod.get("securityContext", {})
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        found += [f"{container['name']}: {v}" for v in _container(container, pod_context)]
    return found


def _container(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    context = container.get("securityContext", {})
    merged = {**pod, **context}
    found = ["privileged"] if context.get("privileged") else []
    found += ["a host port"] if any(p.get("hostPort") for p in container.get("ports", [])) else []
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        found.append("capabilities do not drop ALL")
    found += [f"adds capability {c}" for c in capabilities.get("add", []) if c != "NET_BIND_SERVICE"]
    if merged.get("runAsNonRoot") is not True:
        found.append("runAsNonRoot is not true")
    if merged.get("runAsUser") == 0:
        found.append("runAsUser is 0")
    if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        found.append("seccompProfile is neither RuntimeDefault nor Localhost")
    if context.get("procMount", "Default") != "Default":
        found.append("procMount is not Default")
    return found
