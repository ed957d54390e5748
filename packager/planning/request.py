"""What the user asked `package` (or `render`) for, checked before any heavy work, and the resolve step's request
for each adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from packager.artefact.spec import ArtefactSpec, check_artefact
from packager.builders import builder_entry
from packager.choices import DEVICES, LAYOUTS
from packager.deploy.values import check_deploy
from packager.errors import UserInputError
from packager.image.filters import image_ref
from packager.image.reference import registry_host
from packager.plan import DeploySpec
from packager.resolve.resolver import ResolveRequest
from packager.signing.keys import load_signing_key
from packager.sizes import KV_DTYPES, Target


@dataclass(frozen=True)
class Inputs:
    """What to read: the adapters (name, path) and where their base is (--adapter, --base, --revision, ...)."""

    adapters: tuple[tuple[str, str], ...]
    base: str | None = None
    revision: str | None = None
    checkpoint: int | None = None  # --checkpoint: a run's checkpoint-N / step-N (default: the newest)
    task: str | None = None  # --task: the model class (default: the adapter's task_type, else the base's)
    dtype: str = "auto"
    allow_pickle: bool = False
    qlora: bool = False
    qlora_merge: str | None = None


@dataclass(frozen=True)
class Serving:
    """How the image serves: its layout, engine, device, port and context, and the hardware it is sized for."""

    layout: str = "baked"
    runtime: str = "auto"  # auto | vllm | packager: the engine the image runs
    device: str = "cpu"  # cpu | cuda: the hardware the image is built for
    port: int = 8000
    max_model_len: int | None = None  # vLLM: default the base's max_position_embeddings
    target: Target = field(default_factory=Target)  # the sizing flags: GPUs, memory, KV cache, capacity


@dataclass(frozen=True)
class ImageRequest:
    """How the image is built and where it goes (--tag, --base-image, --builder, --push...)."""

    tag: str
    base_image: str = ""  # "": the runtime image the plan names
    builder: str = "auto"
    push: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    base_model_image: str | None = None  # shared: the pushed base-model image (default: the one package-base recorded)
    sign_key: str | None = None  # a PEM EC private key: sign the pushed image and attach BOM, lock, signatures


@dataclass(frozen=True)
class PackageRequest:
    """What the user asked `package` (or `render`) for, in named parts: what to read, what to make, how to serve,
    the image, where to deploy; and the job's own settings. `check_request` validates every part, once."""

    inputs: Inputs
    serving: Serving
    image: ImageRequest
    artefact: ArtefactSpec = field(default_factory=ArtefactSpec)
    deploy: DeploySpec = field(default_factory=DeploySpec)  # --target, --base-volume, --replicas
    work: str = "packager-build"
    verify: bool = True
    quiet: bool = False


def check_request(request: PackageRequest) -> None:
    """Refuse bad flags and combinations in one line, before any heavy work: every part, each field once."""
    serving, image = request.serving, request.image
    if serving.layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {serving.layout!r}; use one of {', '.join(LAYOUTS)}")
    if serving.layout == "baked" and len(request.inputs.adapters) != 1:
        raise UserInputError("the baked layout serves exactly one adapter; use --layout shared for several")
    if serving.device not in DEVICES:
        raise UserInputError(f"unknown --device {serving.device!r}; use one of {', '.join(DEVICES)}")
    check_target(serving.target, serving.max_model_len)
    if not 1 <= serving.port <= 65535:
        raise UserInputError(f"port {serving.port} is out of range; use 1-65535")
    check_image_request(image)
    check_deploy(request.deploy, serving.layout)
    check_artefact(request.artefact, serving.layout)


def check_image_request(image: ImageRequest) -> None:
    """The builder's name, the references, a push that names a registry, and a usable signing key."""
    if image.builder != "auto":
        builder_entry(image.builder)  # an unknown name, refused naming the registry's
    if image.base_image:  # without one the plan names the runtime image it needs
        image_ref(image.base_image)  # before any heavy work: a bad reference fails in a second, not after a merge
    image_ref(image.tag)
    if image.push and registry_host(image.tag) == "docker.io":
        raise UserInputError(f"--push needs a tag that names a registry, e.g. 127.0.0.1:5000/{image.tag}")
    if image.sign_key:
        if not image.push:
            raise UserInputError("--sign-key signs the pushed image and attaches its evidence to it; add --push")
        load_signing_key(image.sign_key)  # an unreadable or wrong key fails now, not after the build


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


def resolve_request(inputs: Inputs, path: str) -> ResolveRequest:
    """The resolve step's request for one adapter (base weights are hashed later, by the merge or the plan)."""
    return ResolveRequest(
        path,
        inputs.base,
        inputs.revision,
        inputs.checkpoint,
        inputs.dtype,
        inputs.allow_pickle,
        hash_base=False,
        qlora=inputs.qlora,
        qlora_merge=inputs.qlora_merge,
        task=inputs.task,
    )
