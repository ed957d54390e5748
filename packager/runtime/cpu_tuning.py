"""vLLM on a CPU, fitted at container start to the machine the image lands on (figures in bench/RESULTS.md).

Two defaults of vLLM's CPU build cost most of its throughput on small machines:
- half-precision weights on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16, e.g. AVX2-only parts):
  oneDNN cannot build its bf16 matmul there, vLLM falls back to a slow path, and float32 serves ~3x faster at
  16 concurrent requests; packager serves in float32 there (twice the weight memory) unless
  PACKAGER_VLLM_DTYPE says otherwise;
- on a machine with few CPUs vLLM keeps one for its API server and binds the model's threads to the rest,
  half the machine on 2 CPUs; packager binds them to every CPU the container may use, unless the caller set
  VLLM_CPU_OMP_THREADS_BIND or VLLM_CPU_NUM_OF_RESERVED_CPU.

And one that breaks it: vLLM's sampler ranks the tokens of a `logprobs` request with a torch.compile'd function,
which needs a C++ compiler the CPU image does not carry: the first such request killed the engine (HTTP 500, then
every request). The model already runs eagerly (--enforce-eager), so TorchDynamo is switched off
(TORCHDYNAMO_DISABLE=1) and that function runs eagerly too, unless the caller set the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .config_errors import ConfigError
from .vllm_config import VLLM_DTYPES

DTYPE_ENV = "PACKAGER_VLLM_DTYPE"
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
HALF_DTYPES = ("bfloat16", "float16")
FEW_CPUS = 4  # up to this many, the API server shares the cores instead of holding one back
BIND_ENV = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
EAGER_ENV = "TORCHDYNAMO_DISABLE"


@dataclass(frozen=True)
class CpuTuning:
    """The dtype to serve in, the environment to add, and one line per change for the log."""

    dtype: str
    env: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU listed (empty where the file cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def serving_dtype(dtype: str, flags: frozenset[str], environ: dict[str, str]) -> tuple[str, str | None]:
    """The dtype vLLM gets, and why when it is not the merge's: PACKAGER_VLLM_DTYPE, else float32 for
    half-precision weights on a CPU without bf16 instructions."""
    wanted = environ.get(DTYPE_ENV)
    if wanted:
        if wanted not in VLLM_DTYPES:
            raise ConfigError(f"env {DTYPE_ENV} must be one of {', '.join(VLLM_DTYPES)}, got {wanted!r}")
        return wanted, None
    if dtype in HALF_DTYPES and flags and not flags & BF16_FLAGS:
        return "float32", (
            f"serving the {dtype} weights in float32: this CPU has no bf16 instructions (avx512_bf16, amx_bf16), "
            f"where vLLM's {dtype} matmuls take a slow path; set {DTYPE_ENV}={dtype} to keep them (half the memory)"
        )
    return dtype, None


def thread_env(cpus: list[int], environ: dict[str, str]) -> dict[str, str]:
    """Bind the model's threads to every usable CPU on a small machine, unless the caller chose a binding."""
    if len(cpus) > FEW_CPUS or any(name in environ for name in BIND_ENV):
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, sorted(cpus))), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def tune_for_cpu(dtype: str, environ: dict[str, str], flags: frozenset[str] | None = None) -> CpuTuning:
    """Everything above for this machine: the CPUs this process may run on and the flags of /proc/cpuinfo."""
    chosen, why = serving_dtype(dtype, cpu_flags() if flags is None else flags, environ)
    env = thread_env(sorted(os.sched_getaffinity(0)), environ)
    env |= {} if EAGER_ENV in environ else {EAGER_ENV: "1"}  # no compiler in the image: no torch.compile
    notes = (why,) if why else ()
    if env:
        notes += (f"binding vLLM's threads to CPUs {env['VLLM_CPU_OMP_THREADS_BIND']} (none held back)",)
    return CpuTuning(chosen, env, notes)
