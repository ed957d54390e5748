"""A serving pod's size (resolve/sizing.py computes it at plan time; the runtime config and the manifests are
derived from it) and the target it is computed for."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Target:
    """Where the image will run: the device, each GPU's memory, GPUs per node, and concurrent sequences."""

    device: str = "cpu"
    gpu_memory_gib: float = 80.0
    gpus_per_node: int = 8
    max_num_seqs: int = 16


@dataclass(frozen=True)
class Sizing:
    """A pod's size: GPUs (tensor-parallel per node, pipeline stages across nodes), memory, shm, and why."""

    device: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_bytes: int  # the KV cache the pod reserves
    max_num_seqs: int
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    gpu_memory_bytes: int = 0  # each GPU's (0 on CPU)
    memory_request_bytes: int = 0  # host memory per pod
    memory_limit_bytes: int = 0
    cpu_request: int = 2
    shm_bytes: int = GIB
    arithmetic: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        """GPUs per pod (one pod per pipeline stage)."""
        return self.tensor_parallel if self.device == "cuda" else 0

    @property
    def nodes(self) -> int:
        """Pods (nodes) one replica spans: its pipeline stages."""
        return self.pipeline_parallel


def gib_text(value: float) -> str:
    """GiB to one decimal; below 1 GiB in MiB (a tiny model's figures would all read 0.0)."""
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / 2**20:.1f} MiB"
