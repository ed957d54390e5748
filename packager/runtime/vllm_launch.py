"""Start vLLM's OpenAI server for the packaged model: check the mounted base against the lock (shared layout),
then `exec` the engine, so signals and exit codes pass straight through.

CLI: python3 -m packager_runtime.vllm_launch [--config /opt/packager/runtime.json] [--host 0.0.0.0] [--port N]
(env PORT overrides runtime.json's port). Exit 2: bad config; exit 3: wrong or missing base; exit 4: the container
lacks what the engine needs (shared memory: run it with --shm-size 1g).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from .api_key import vllm_env
from .config import ConfigError, RuntimeConfig, load_config
from .cpu_tuning import CpuTuning, tune_for_cpu
from .signature import SignatureMismatch
from .startup import check_mounted_base, check_signature, exit_code, parse_args, serving_port
from .verify_base import BaseMismatch
from .vllm_config import VllmSettings

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB, where the plan sized none; runtime.json's kv_cache_space_gib, else `-e`
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",  # no network in a --network none container: do not probe for an address
}


SHM = "/dev/shm"
SHM_NEEDED = 256 << 20  # vLLM's engine and worker exchange requests through a 160 MiB ring in /dev/shm


class NotEnoughShm(Exception):
    """/dev/shm is smaller than the engine needs (Docker's default is 64 MiB)."""


def check_shm(path: str = SHM, needed: int = SHM_NEEDED) -> None:
    """Refuse to start where the engine would die on its first allocation, with the fix in the message."""
    free = shutil.disk_usage(path).free if os.path.isdir(path) else 0
    if free < needed:
        raise NotEnoughShm(
            f"{path} has {free >> 20} MiB free and vLLM needs {needed >> 20} MiB; run the container with "
            "--shm-size 1g (compose: shm_size: 1g; Kubernetes: an emptyDir with medium Memory at /dev/shm)"
        )


def vllm_argv(
    config: RuntimeConfig, host: str, port: int, python: str = sys.executable, dtype: str | None = None
) -> list[str]:
    """vLLM's command line for this config: the merged model (baked), or the base with every adapter as a JSON
    `--lora-modules` entry (shared; JSON because vLLM's name=path form splits on every '='). `dtype`: the one
    chosen at start (cpu_tuning), else the config's."""
    vllm = config.vllm
    argv = [python, "-m", SERVER_MODULE, "--host", host, "--port", str(port), "--dtype", dtype or vllm.dtype]
    argv += ["--max-model-len", str(vllm.max_model_len), *(["--enforce-eager"] if vllm.device == "cpu" else [])]
    argv += ["--quantization", vllm.quantization] if vllm.quantization else []
    argv += sizing_flags(vllm)
    if vllm.pooling is not None:  # an embeddings model or a classifier: vLLM's pooling runner
        argv += ["--runner", "pooling", "--pooler-config", json.dumps(vllm.pooling, sort_keys=True)]
    if config.layout == "baked":
        return [*argv, "--model", config.model_dir or "", "--served-model-name", config.served_name or ""]
    argv += ["--model", config.base_dir, "--served-model-name", vllm.base_name]
    argv += ["--enable-lora", "--max-lora-rank", str(vllm.max_lora_rank), "--max-loras", str(vllm.max_loras)]
    modules = [json.dumps({"name": n, "path": p, "base_model_name": vllm.base_name}) for n, p in config.adapters]
    return [*argv, "--lora-modules", *modules]


def sizing_flags(vllm: VllmSettings) -> list[str]:
    """The parallelism and memory flags the plan sized (none at vLLM's defaults)."""
    flags = {
        "--tensor-parallel-size": vllm.tensor_parallel_size if vllm.tensor_parallel_size > 1 else None,
        "--pipeline-parallel-size": vllm.pipeline_parallel_size if vllm.pipeline_parallel_size > 1 else None,
        "--max-num-seqs": vllm.max_num_seqs,
        "--gpu-memory-utilization": vllm.gpu_memory_utilization,
        "--kv-cache-dtype": vllm.kv_cache_dtype,
        # stages on other nodes are Ray workers (KServe's multi-node preset starts them)
        "--distributed-executor-backend": "ray" if vllm.pipeline_parallel_size > 1 else None,
    }
    argv = [part for flag, value in flags.items() if value is not None for part in (flag, str(value))]
    return [*argv, "--enable-expert-parallel"] if vllm.enable_expert_parallel else argv


def engine_env(
    environ: dict[str, str], tuning: CpuTuning | None = None, vllm: VllmSettings | None = None
) -> dict[str, str]:
    """The engine's environment: offline, no telemetry, on CPU the KV space the plan sized (1 GiB without one)
    unless the caller set VLLM_CPU_KVCACHE_SPACE, plus the CPU thread binding chosen at start."""
    sized = {"VLLM_CPU_KVCACHE_SPACE": str(vllm.kv_cache_space_gib)} if vllm and vllm.kv_cache_space_gib else {}
    return {**ENGINE_ENV, **sized, **(tuning.env if tuning else {}), **environ, **vllm_env(environ)}


def fit_to_machine(config: RuntimeConfig, environ: dict[str, str]) -> CpuTuning | None:
    """On a CPU, the dtype and thread binding for this machine (each change logged); nothing on a GPU."""
    if config.vllm.device != "cpu":
        return None
    tuning = tune_for_cpu(config.vllm.dtype, environ)
    for note in tuning.notes:
        print(f"packager: {note}", file=sys.stderr)
    return tuning


EXIT_CODES = {ConfigError: 2, BaseMismatch: 3, SignatureMismatch: 3, NotEnoughShm: 4}


def main(argv: list[str] | None = None) -> int:
    """Check, then replace this process with vLLM; one `error:` line and exit 2/3 on bad config or base."""
    args = parse_args("packager_runtime.vllm_launch", "Serve with vLLM.", argv)
    try:
        config = load_config(args.config)
        if config.engine != "vllm":
            raise ConfigError(f"runtime config {args.config} is for the {config.engine} engine, not vllm")
        check_signature(config)
        check_mounted_base(config)
        port = serving_port(args, config)
        check_shm()
        tuning = fit_to_machine(config, dict(os.environ))
    except tuple(EXIT_CODES) as exc:
        return exit_code(exc, EXIT_CODES)
    command = vllm_argv(config, args.host, port, dtype=tuning.dtype if tuning else None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, engine_env(dict(os.environ), tuning, config.vllm))
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
