"""`package --dry-run` for people: one summary block (what is read, made, served by which engine on which
device, what each pod and this machine spend, where the image goes), then the details. The figures are the ones
the manifests carry (the same Kubernetes quantities), never a raw runtime.json."""

from __future__ import annotations

from packager.deploy.values import pod_resources
from packager.plan import AdapterSpec, PackagePlan
from packager.planning.memory import available_memory
from packager.sizes import GIB, gib_text


def plan_lines(plan: PackagePlan) -> list[str]:
    """The summary block, then the details header; the caller prints the details it shares with other commands."""
    rows = [("reads", _reads(plan)), ("makes", [_makes(plan)]), ("serves", _serves(plan))]
    rows += [("costs", _costs(plan)), ("image", [_image(plan)]), ("deploys", [_deploys(plan)])]
    lines = ["plan (dry run: nothing is merged, written, built or pushed)"]
    for key, texts in rows:
        lines += [f"  {key if i == 0 else '':<9} {text}" for i, text in enumerate(texts)]
    return [*lines, "", "details"]


def _reads(plan: PackagePlan) -> list[str]:
    adapters = [(s.name, s.spec) for s in plan.served] or [(plan.image.runtime.served_name, plan.adapter)]
    lines = [f"adapter {name}: {spec.path} [{adapter_kind(spec)}]" for name, spec in adapters]
    base, fp = plan.base, plan.base.fingerprint
    size = sum(f.size for f in base.files if f.path.endswith((".safetensors", ".bin"))) / 1e9
    where = f"{base.repo_id}@{base.commit or base.revision or 'main'}" if base.repo_id else base.path
    return [*lines, f"base: {where} ({fp.model_type}, {fp.num_hidden_layers} layers, {fp.dtype}, {size:.1f} GB)"]


def adapter_kind(adapter: AdapterSpec) -> str:
    """`LORA, r=8`, `PROMPT_TUNING, num_virtual_tokens=4`, or an AdapterHub method in words."""
    if adapter.library == "adapters":
        return str(adapter.settings["adapterhub"]["method"])
    size = "num_virtual_tokens" if adapter.is_unmerged else "r"
    return f"{adapter.peft_type}, {size}={adapter.settings.get(size, '?')}"


def _makes(plan: PackagePlan) -> str:
    if plan.merge is None:
        made = "nothing merged: the adapters are served on the unmodified base"
    else:
        made = f"the merge ({plan.merge.changed_tensors} of {len(plan.merge.tensors)} tensors change)"
    artefact = plan.artefact
    if artefact.streamed:
        return f"{made}, quantized {artefact.quantize} as it streams (compressed-tensors)"
    if artefact.export == "onnx":
        return f"{made}, exported to ONNX ({artefact.label})"
    if artefact.load_quantization != "none":
        return f"{made}; the runtime quantizes it to {artefact.load_quantization} when it loads it (CUDA GPU)"
    return made


def _serves(plan: PackagePlan) -> list[str]:
    image, sizing = plan.image, plan.sizing
    engine = "vLLM" if image.engine == "vllm" else "packager's server"
    where = image.device.upper()
    if sizing is not None and sizing.device == "cuda":
        gib = sizing.gpu_memory_bytes / GIB
        where = f"{sizing.gpus * sizing.nodes} GPU(s) of {gib:g} GiB" + (f" on {sizing.nodes} nodes" if sizing.nodes > 1
                                                                            else "")  # fmt: skip
    context = f", context {sizing.max_model_len:,} tokens" if sizing and sizing.max_model_len else ""
    pool = f", KV cache for {sizing.kv_tokens:,} tokens" if sizing and sizing.kv_tokens else ""
    return [f"{engine} on {where}{context}{pool}", f"why {image.engine}: {image.engine_reason}"]


def _costs(plan: PackagePlan) -> list[str]:
    pod = pod_resources(plan)
    gpus = f"{pod['gpus']} GPU(s), " if plan.image.device == "cuda" else ""
    shm = f", /dev/shm {pod['shm']}" if plan.image.engine == "vllm" else ""
    lines = [f"each pod: {gpus}{pod['cpu_request']} CPU, memory {pod['memory_request']} (limit {pod['memory_limit']})"
             f"{shm}"]  # fmt: skip
    if plan.memory:
        steps = ", ".join(f"{s.step} {s.peak_bytes / 1e9:.1f} GB" for s in plan.memory)
        lines.append(f"this machine: {steps} at the peak, {available_memory() / 1e9:.1f} GB available")
    return lines


def _image(plan: PackagePlan) -> str:
    image = plan.image
    push = f"pushed to {image.tag}" if image.push else "not pushed"
    built = "same inputs give the same digest" if image.reproducible else "digest not reproducible"
    return (f"{image.tag} ({image.layout}, FROM {image.base_image}, port {image.port}); {image.builder} builder, "
            f"{built}; {push}")  # fmt: skip


def _deploys(plan: PackagePlan) -> str:
    if not plan.deploy.targets:
        return "no manifests"
    volume = f", the base from volume {plan.deploy.base_volume}" if plan.image.layout == "shared" else ""
    return f"{', '.join(plan.deploy.targets)} manifests into WORK/deploy{volume}"


def runtime_line(plan: PackagePlan) -> str:
    """What the image's runtime starts with, in words (runtime.json in full: --json)."""
    runtime = plan.image.runtime
    if runtime.engine != "vllm":
        return f"packager's server: {runtime.task} in {runtime.model_class}, backend {runtime.backend}"
    vllm = runtime.vllm
    parts = [f"vLLM {vllm.dtype}", f"max-model-len {vllm.max_model_len}"]
    if runtime.layout == "shared":
        parts.append(f"{len(runtime.adapters)} LoRA adapter(s) in {vllm.max_loras} slots of rank {vllm.max_lora_rank}")
    if vllm.kv_cache_space_gib:
        parts.append(f"VLLM_CPU_KVCACHE_SPACE {vllm.kv_cache_space_gib} GiB")
    if vllm.quantization:
        parts.append(f"--quantization {vllm.quantization}")
    return ", ".join(parts)


def pinned_line(plan: PackagePlan) -> str:
    """How many input files the lock pins, and which are still to be hashed."""
    later = sum(1 for f in plan.base.files if f.sha256 is None)
    files = "file" if later == 1 else "files"
    when = "while the merge reads them" if plan.merge is not None else "when the image is rendered, in parallel"
    deferred = f" ({later} base {files} not pinned yet: hashed {when})" if later else ""
    return f"{plan.pinned_files} input files{deferred}"


def sizing_lines(plan: PackagePlan) -> list[str]:
    """The pod's size and the arithmetic behind it."""
    sizing = plan.sizing
    if sizing is None:
        return []
    gpus = f"{sizing.gpus} GPU(s) x {sizing.nodes} node(s)" if sizing.device == "cuda" else "CPU"
    head = f"size:    {gpus}, memory {gib_text(sizing.memory_request_bytes)}, /dev/shm {gib_text(sizing.shm_bytes)}"
    return [head, *(f"         {line}" for line in sizing.arithmetic), *(f"read:    {n}" for n in sizing.notes)]
