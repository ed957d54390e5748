"""What the user asked `package` (or `render`) for, checked before any heavy work, and the resolve step's request
for each adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from packager.artefact.spec import ArtefactSpec, artefact_spec
from packager.builders import builder_entry
from packager.choices import DEVICES, LAYOUTS
from packager.deploy.values import check_deploy
from packager.errors import UserInputError
from packager.image.filters import image_ref
from packager.image.reference import registry_host
from packager.plan import DeploySpec
from packager.resolve.resolver import ResolveRequest
from packager.sizes import KV_DTYPES, Target


@dataclass(frozen=True)
class PackageRequest:
    """What the user asked `package` (or `render`) for; every field maps to a CLI flag."""

    adapters: tuple[tuple[str, str], ...]  # (name, path)
    layout: str
    base_image: str
    tag: str
    base: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    allow_pickle: bool = False
    work: str = "packager-build"
    builder: str = "auto"
    push: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    quiet: bool = False
    artefact: ArtefactSpec = field(default_factory=ArtefactSpec)
    qlora: bool = False
    qlora_merge: str | None = None
    port: int = 8000
    runtime: str = "auto"  # auto | vllm | packager: the engine the image runs
    max_model_len: int | None = None  # vLLM: default the base's max_position_embeddings
    device: str = "cpu"  # cpu | cuda: the hardware the image is built for
    task: str | None = None  # --task: the model class (default: the adapter's task_type, else the base's)
    checkpoint: int | None = None  # --checkpoint: a run's checkpoint-N / step-N (default: the newest)
    base_model_image: str | None = None  # shared: the pushed base-model image (default: the one package-base recorded)
    deploy: DeploySpec = field(default_factory=DeploySpec)  # --target, --base-volume, --replicas
    target: Target = field(default_factory=Target)  # the sizing flags: GPUs, memory, KV cache, capacity


def check_request(request: PackageRequest) -> None:
    """Refuse bad flags and combinations in one line, before any heavy work."""
    if request.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {request.layout!r}; use one of {', '.join(LAYOUTS)}")
    if request.layout == "baked" and len(request.adapters) != 1:
        raise UserInputError("the baked layout serves exactly one adapter; use --layout shared for several")
    if request.device not in DEVICES:
        raise UserInputError(f"unknown --device {request.device!r}; use one of {', '.join(DEVICES)}")
    check_target(request.target, request.max_model_len)
    if request.builder != "auto":
        builder_entry(request.builder)  # an unknown name, refused naming the registry's
    if request.base_image:  # without one the plan names the runtime image it needs
        image_ref(request.base_image)  # before any heavy work: a bad reference fails in a second, not after a merge
    image_ref(request.tag)
    if not 1 <= request.port <= 65535:
        raise UserInputError(f"port {request.port} is out of range; use 1-65535")
    if request.push and registry_host(request.tag) == "docker.io":
        raise UserInputError(f"--push needs a tag that names a registry, e.g. 127.0.0.1:5000/{request.tag}")
    check_deploy(request.deploy, request.layout)
    spec = request.artefact
    artefact_spec(  # bad combinations, before any heavy work: every field, as the CLI validated it
        spec.quantize, spec.export, request.layout, spec.granularity, spec.onnx_atol, spec.max_accuracy_loss,
        spec.calibrate, spec.max_kl, spec.min_top1,
    )  # fmt: skip


# the sizing flags: Target field -> (flag, upper bound); each a positive number
TARGET_FLAGS = {
    "gpu_memory_gib": ("--gpu-memory", 4096), "gpus_per_node": ("--gpus-per-node", 4096),
    "max_num_seqs": ("--max-num-seqs", 1 << 20), "kv_tokens": ("--kv-tokens", 1 << 40),
    "concurrency": ("--concurrency", 1 << 20), "tokens_per_request": ("--tokens-per-request", 1 << 24),
    "cpu_memory_gib": ("--cpu-memory", 1 << 20), "gpu_memory_utilization": ("--gpu-memory-utilization", 1),
}  # fmt: skip


def check_target(target: Target, max_model_len: int | None) -> None:
    """The sizing flags, each in range, and the capacity asked for in one way only."""
    for name, (flag, most) in TARGET_FLAGS.items():
        value = getattr(target, name)
        if value is not None and (isinstance(value, bool) or not 0 < value <= most):
            raise UserInputError(f"{flag} {value} is out of range; give a positive number (at most {most})")
    if target.kv_cache_dtype not in KV_DTYPES:
        raise UserInputError(f"unknown --kv-cache-dtype {target.kv_cache_dtype!r}; use one of {', '.join(KV_DTYPES)}")
    if target.kv_tokens and target.concurrency:
        raise UserInputError("--kv-tokens and --concurrency both reserve KV cache; pass one of them")
    if target.tokens_per_request and not target.concurrency:
        raise UserInputError("--tokens-per-request sizes --concurrency's sequences; pass --concurrency N with it")
    if max_model_len and target.tokens_per_request and target.tokens_per_request > max_model_len:
        raise UserInputError(
            f"--tokens-per-request {target.tokens_per_request} exceeds --max-model-len {max_model_len}, the longest "
            "sequence vLLM accepts; lower one or raise the other"
        )


def resolve_request(request: PackageRequest, path: str) -> ResolveRequest:
    """The resolve step's request for one adapter (base weights are hashed later, by the merge or the plan)."""
    return ResolveRequest(
        path,
        request.base,
        request.revision,
        request.checkpoint,
        request.dtype,
        request.allow_pickle,
        hash_base=False,
        qlora=request.qlora,
        qlora_merge=request.qlora_merge,
        task=request.task,
    )
