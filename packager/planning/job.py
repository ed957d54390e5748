"""The whole job's plan, built once: every adapter resolved and checked, the merge (or none), the artefact, and
the image, with the runtime config the image will load. Later steps take this plan and never resolve the user's
inputs again (a folder a step makes, such as a quantized base, is pinned as it is made: resolve/pins.py)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from packager.architecture.inspect import read_config
from packager.builders import builder_entry, choose_builder
from packager.deploy.values import check_nodes
from packager.dtypes import CONFIG_NAME, DTYPE_OF_CONFIG, SAFETENSORS_NAME
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.image.libraries import check_installed, requirement
from packager.image.paths import ADAPTERS_DIR, BASE_MOUNT, LOCK_IN_IMAGE, MODEL_DIR
from packager.image.reference import split_target
from packager.image.runtime_images import image_tag
from packager.plan import AdapterSpec, ImagePlan, PackagePlan, ServedAdapter
from packager.planning.engine import RuntimeChoice, choose_runtime, vllm_lora_rank
from packager.planning.gpu_images import gpu_base
from packager.planning.memory import check_memory, plan_memory
from packager.planning.model_images import model_image_for
from packager.planning.quantized import base_folder, shared_quantized_base, with_quantization
from packager.planning.request import PackageRequest, check_request, resolve_request
from packager.planning.served_task import served_task
from packager.planning.vllm_models import pooler_config, sentence_max_length
from packager.resolve.adapterhub import base_tensor_reader, check_shared
from packager.resolve.pins import known_base
from packager.resolve.prompt_learning import check_unmerged_artefact
from packager.resolve.resolver import Resolved, resolve
from packager.runtime.config import RuntimeConfig, VllmSettings
from packager.sizing import sized_plan
from packager.tasks import ModelTask

__all__ = ["Job", "PackageRequest", "plan_package", "service_name"]


@dataclass(frozen=True)
class Job:
    """The frozen plan, plus the resolved inputs the merge reads through (one per adapter, in order)."""

    plan: PackagePlan
    inputs: tuple[Resolved, ...]


def plan_package(request: PackageRequest) -> Job:
    """Check the request, resolve every adapter once, and freeze the whole job into one plan."""
    check_request(request)
    serving, spec = request.serving, request.artefact
    inputs = tuple(resolve(resolve_request(request.inputs, path)) for _, path in request.inputs.adapters)
    task = served_task(request, inputs)
    check_unmerged_artefact(spec, [item.adapter for item in inputs])
    if spec.streamed and serving.layout == "baked":  # quantized as the merge streams
        inputs = (with_quantization(inputs[0], spec.quantize, spec.calibrate),)
    if spec.export == "onnx":  # before the merge: the base decides whether it can be exported
        from packager.artefact.onnx_encoders import check_encoder_exportable
        from packager.artefact.onnx_export import check_exportable

        model_type = inputs[0].plan.base.fingerprint.model_type
        check_exportable(model_type) if task.name == "CAUSAL_LM" else check_encoder_exportable(model_type, task)
    choice = choose_runtime(
        serving.runtime,
        serving.layout,
        read_config(inputs[0].plan.base.path),
        spec,
        [item.plan.adapter for item in inputs],
        serving.device,
        task.name,
        _served_tokenizers(inputs, serving.layout),
        inputs[0].architecture.model_class if serving.layout == "baked" else None,
        pooler_config(task.name, inputs[0].plan.base.path),
    )
    baked = serving.layout == "baked"
    plan = _baked_plan(request, inputs[0], choice) if baked else _shared_plan(request, inputs, choice)
    plan = _sized(plan, request, inputs[0])
    memory = plan_memory(plan, request.verify)
    check_memory(memory)  # before any heavy work: a step that cannot fit is refused now, not killed later
    plan = dataclasses.replace(plan, deploy=request.deploy, memory=memory)
    return Job(dataclasses.replace(plan, deploy=check_nodes(plan)), inputs)


def _sized(plan: PackagePlan, request: PackageRequest, first: Resolved) -> PackagePlan:
    """The plan with its pod's size, and vLLM started with the layout, context and KV cache it was sized for."""
    target = dataclasses.replace(request.serving.target, device=request.serving.device)
    fixed = bool(request.serving.max_model_len)
    return sized_plan(plan, first.weights.tensors, first.architecture, target, read_config(plan.base.path), fixed)


def _served_tokenizers(inputs: tuple[Resolved, ...], layout: str) -> tuple[str, ...]:
    """The folders whose tokenizers the image serves: the merge's (the adapter's own, else the base's), or in the
    shared layout the base's and every adapter's."""
    first = inputs[0].plan
    if layout == "baked":
        return (first.adapter.path if first.merge and first.merge.tokenizer_from == "adapter" else first.base.path,)
    return (first.base.path, *(item.plan.adapter.path for item in inputs))


def _runtime_task(task: ModelTask) -> dict[str, str]:
    """What runtime.json says the model is: its task and the Auto class it loads in."""
    return {"task": task.name, "model_class": task.auto_class}


def _image(request: PackageRequest, runtime: RuntimeConfig, choice: RuntimeChoice, base_source: str = "") -> ImagePlan:
    given, device = request.image, request.serving.device
    builder = builder_entry(choose_builder(given.builder, given.push))
    base_image, packages = (given.base_image, ()) if given.base_image else _default_base(request, choice, runtime)
    how = "given with --base-image" if given.base_image else _base_image_how(device, choice.engine)
    libraries = ()
    if runtime.adapter_library == "adapters":  # copied from this environment: refused now if it lacks the pin
        check_installed("adapters", "serving AdapterHub adapters unmerged")
        libraries = (requirement("adapters"),)
    return ImagePlan(
        base_image,
        given.tag,
        builder.name,
        given.push,
        runtime,
        base_source,
        choice.reason,
        device,
        packages,
        libraries=libraries,
        base_image_how=how,
        reproducible=builder.reproducible,
    )


def _base_image_how(device: str, engine: str) -> str:
    """How the FROM image a plan names is had when none was given."""
    if device == "cuda":
        return "pulled from its public registry at build"
    return f"built here from its recipe by `packager base-image --runtime {engine}` (package does it when missing)"


def _default_base(request: PackageRequest, choice: RuntimeChoice, runtime: RuntimeConfig) -> tuple[str, tuple]:
    """The FROM the plan needs when none is given, and what the Dockerfile installs on it: on CPU the runtime
    image `packager base-image` builds (named by its recipe), on CUDA the pinned public image."""
    if request.serving.device != "cuda":
        return image_tag(choice.engine), ()
    scheme = request.artefact.scheme
    return gpu_base(choice.engine, runtime.backend, scheme.requirements if scheme else ())


def _engine(
    request: PackageRequest, choice: RuntimeChoice, plan: PackagePlan, base_name: str, served: list[AdapterSpec]
) -> dict:
    """The RuntimeConfig fields that start vLLM, when it is the chosen engine (`served`: the shared adapters)."""
    if choice.engine != "vllm":
        return {}
    length = _max_model_len(request, choice, plan)
    rank = vllm_lora_rank(served) if served else 16
    # one LoRA slot more than adapters: vLLM's CPU kernels give a base request batched with LoRA requests the
    # last slot's delta (upstream PRs #48421, #49656); an empty last slot keeps every mixed batch exact
    slots = len(served) + 1 if served else 1
    quantization = plan.artefact.scheme.vllm_name if plan.artefact.load_quantization != "none" else None
    settings = VllmSettings(
        _vllm_dtype(plan), int(length), base_name, rank, slots, request.serving.device, quantization, choice.pooler
    )
    return {"engine": "vllm", "vllm": settings}


def _max_model_len(request: PackageRequest, choice: RuntimeChoice, plan: PackagePlan) -> int:
    """vLLM's --max-model-len: the model's limit (a sentence-transformers model's max_seq_length, which vLLM's
    pooling runner enforces), or --max-model-len within it; above it vLLM would refuse to start."""
    limit = choice.context_length
    if plan.task.name != "CAUSAL_LM":
        limit = min(filter(None, (limit, sentence_max_length(plan.base.path))), default=None)
    asked = request.serving.max_model_len
    if asked and limit and asked > limit:
        raise UserInputError(
            f"--max-model-len {asked} exceeds the model's {limit} tokens, and vLLM would refuse to start; pass at "
            f"most {limit}"
        )
    return asked or limit or 2048


def _vllm_dtype(plan: PackagePlan) -> str:
    chosen = plan.merge.dtype if plan.merge is not None else "auto"
    stored = SAFETENSORS_NAME.get(chosen) or DTYPE_OF_CONFIG.get(plan.base.fingerprint.dtype or "", "")
    return CONFIG_NAME.get(stored, "auto")


def _baked_plan(request: PackageRequest, resolved: Resolved, choice: RuntimeChoice) -> PackagePlan:
    if resolved.plan.merge is None:
        return _unmerged_baked_plan(request, resolved, choice)
    spec = request.artefact
    runtime = RuntimeConfig(
        "baked",
        request.serving.port,
        model_dir=MODEL_DIR,
        served_name=request.inputs.adapters[0][0],
        backend=spec.backend,
        load_quantization=spec.load_quantization,
        **_runtime_task(resolved.plan.task),
    )
    plan = dataclasses.replace(resolved.plan, artefact=spec)
    runtime = dataclasses.replace(runtime, **_engine(request, choice, plan, request.inputs.adapters[0][0], []))
    return dataclasses.replace(plan, image=_image(request, runtime, choice, "/models/base"))


def _unmerged_baked_plan(request: PackageRequest, resolved: Resolved, choice: RuntimeChoice) -> PackagePlan:
    """Baked, nothing merged (prompt learning): the base at MODEL_DIR and the adapter beside it, both in the image,
    every file pinned by sha256."""
    name = request.inputs.adapters[0][0]
    runtime = RuntimeConfig(
        "baked",
        request.serving.port,
        model_dir=MODEL_DIR,
        served_name=name,
        load_quantization=request.artefact.load_quantization,
        adapter_dir=f"{ADAPTERS_DIR}/{name}",
        adapter_library=resolved.plan.adapter.library,
        **_runtime_task(resolved.plan.task),
    )
    served = (ServedAdapter(name, resolved.plan.adapter),)
    plan = dataclasses.replace(resolved.plan, base=known_base(resolved.plan.base), artefact=request.artefact)
    plan = dataclasses.replace(plan, served=served)
    return dataclasses.replace(plan, image=_image(request, runtime, choice, "/models/base"))


def _shared_plan(request: PackageRequest, inputs: tuple[Resolved, ...], choice: RuntimeChoice) -> PackagePlan:
    first = inputs[0].plan
    named = [(name, item) for (name, _), item in zip(request.inputs.adapters, inputs, strict=True)]
    for name, item in named:
        _check_servable_unmerged(name, item, first.base.path)
    if any(item.plan.adapter.library == "adapters" for _, item in named):
        check_shared(
            [(name, item.adapter) for name, item in named], base_tensor_reader(first.base.path, inputs[0].weights)
        )
    served = tuple(ServedAdapter(name, item.plan.adapter) for name, item in named)
    runtime = RuntimeConfig(
        "shared",
        request.serving.port,
        served_name=service_name(request.image.tag),
        base_dir=BASE_MOUNT,
        adapters=tuple((s.name, f"{ADAPTERS_DIR}/{s.name}") for s in served),
        lock=LOCK_IN_IMAGE,
        load_quantization=request.artefact.load_quantization,
        adapter_library=first.adapter.library,
        **_runtime_task(first.task),
    )
    base = known_base(first.base)  # hashed when the lock is written (a dry run reads no weight)
    plan = PackagePlan(first.adapter, base, None, artefact=request.artefact, served=served, task=first.task)
    engine = _engine(request, choice, plan, _base_name(plan), [s.spec for s in served])
    runtime = dataclasses.replace(runtime, **engine)
    image = _image(request, runtime, choice, first.base.path)
    if request.artefact.streamed:  # LoRA on a quantized base: the one package-base pushed, or made at render
        scheme, chosen_image = request.artefact.quantize, request.image.base_model_image
        quantize, model_image, mounted, make = shared_quantized_base(scheme, base, chosen_image)
        folder = base_folder(request.work, quantize)  # where a bind mount finds it
        image = dataclasses.replace(image, model_image=model_image, base_source=folder, base_to_make=folder * make)
        plan = dataclasses.replace(plan, quantize=quantize)
        return dataclasses.replace(plan, base=dataclasses.replace(base, files=mounted), image=image)
    model_image, mounted = model_image_for(request.image.base_model_image, base.files)
    image = dataclasses.replace(image, model_image=model_image)
    return dataclasses.replace(plan, base=dataclasses.replace(base, files=mounted), image=image)


def _base_name(plan: PackagePlan) -> str:
    """What the base answers to beside the adapters (vLLM serves it too): its hub id or folder name, never an
    adapter's name."""
    name = re.sub(r"[^A-Za-z0-9._:/-]+", "-", plan.base.label_id).strip("-") or "base"
    return f"{name}-base" if name in {s.name for s in plan.served} else name


def _check_servable_unmerged(name: str, item: Resolved, base_path: str) -> None:
    if item.plan.base.path != base_path:
        raise IncompatibleAdapterError(
            f"adapter {name} resolves to base {item.plan.base.path}, not {base_path}; a shared-base image "
            "serves adapters of one base: pass --base, or package them separately"
        )
    if item.plan.merge is not None and "vocab_size" in item.plan.merge.config_updates:
        raise IncompatibleAdapterError(
            f"adapter {name} extends the vocabulary, so it cannot share an unmodified base; use --layout baked"
        )


def service_name(tag: str) -> str:
    """The compose service (and shared image's) name: the tag's last repository component."""
    repository, _ = split_target(tag)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repository.rsplit("/", 1)[-1]) or "packager"
