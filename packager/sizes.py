"""A serving pod's size (packager/sizing computes it at plan time; the runtime config and the manifests are
derived from it) and the target it is computed for."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
KV_CACHE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}  # --kv-cache-dtype (vLLM's names); auto: the model's dtype
KV_DTYPES = ("auto", *KV_CACHE_BYTES)


@dataclass(frozen=True)
class Target:
    """Where the image will run, and what it must hold: the device, each GPU's memory and the share vLLM takes,
    GPUs per node, the scheduler's cap, the KV cache's dtype, expert parallelism, the capacity asked for (none:
    vLLM's start rule alone), and on CPU the node's memory."""

    device: str = "cpu"
    gpu_memory_gib: float = 80.0
    gpus_per_node: int = 8
    max_num_seqs: int | None = None  # vLLM's --max-num-seqs (None: its default); a cap, it reserves nothing
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    expert_parallel: bool = False
    kv_tokens: int | None = None  # guaranteed: the KV pool holds this many tokens of max-model-len sequences
    concurrency: int | None = None  # guaranteed: this many sequences of `tokens_per_request` at once
    tokens_per_request: int | None = None
    cpu_memory_gib: float = 64.0  # a CPU node's memory: the pod's request must fit it


@dataclass(frozen=True)
class Sizing:
    """A pod's size: GPUs (tensor-parallel per node, pipeline stages across nodes), memory, shm, the KV cache and
    what it buys, the shorter-context options, and why (`arithmetic`, the config readings in `notes`)."""

    device: str
    weights_bytes: int
    kv_bytes_per_token: int  # full-attention KV of one token over the whole model, unsplit
    kv_bytes: int  # the KV cache of one replica: the leftover pool of all its GPUs; on CPU the KV space
    max_num_seqs: int | None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    gpu_memory_bytes: int = 0  # each GPU's (0 on CPU)
    memory_request_bytes: int = 0  # host memory per pod
    memory_limit_bytes: int = 0
    cpu_request: int = 2
    shm_bytes: int = GIB
    arithmetic: tuple[str, ...] = ()
    max_model_len: int = 0  # the context vLLM starts with (on CPU, lowered to what the node holds)
    kv_tokens: int = 0  # tokens the KV cache holds in sequences of max_model_len
    concurrency: tuple[tuple[int, float], ...] = ()  # (tokens per request, sequences held at once)
    expert_parallel: bool = False
    kv_cache_space_gib: int | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE
    options: tuple[str, ...] = ()  # fewer GPUs at a shorter context
    notes: tuple[str, ...] = ()  # how the config was read
    weights_per_gpu: int = 0  # the most any GPU holds (its pipeline stage's share)
    kv_pool_per_gpu: int = 0  # what vLLM's start rule leaves a GPU of the tightest stage for KV

    @property
    def gpus(self) -> int:
        """GPUs per pod (one pod per pipeline stage)."""
        return self.tensor_parallel if self.device == "cuda" else 0

    @property
    def nodes(self) -> int:
        """Pods (nodes) one replica spans: its pipeline stages."""
        return self.pipeline_parallel

    @property
    def layout(self) -> str:
        """The layout in words (the arithmetic's last line)."""
        return self.arithmetic[-1] if self.arithmetic else "one process"


def gib_text(value: float) -> str:
    """GiB to one decimal; below 1 GiB in MiB (a tiny model's figures would all read 0.0)."""
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / 2**20:.1f} MiB"
