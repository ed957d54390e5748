"""Fitting vLLM's CPU build to the machine at start: the dtype where bf16 has no instructions, the thread binding
on small machines, and what the caller set always winning."""

from __future__ import annotations

import json

import pytest

from packager.runtime import cpu_tuning, vllm_launch
from packager.runtime.config import ConfigError, RuntimeConfig, VllmSettings

AVX2 = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
SAPPHIRE = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16"}


def test_flags_come_from_the_first_cpu_listed(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx512_bf16\n")
    assert cpu_tuning.cpu_flags(str(info)) == {"fpu", "avx2", "fma"}
    assert cpu_tuning.cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize(
    ("dtype", "flags", "env", "served"),
    [
        ("bfloat16", AVX2, {}, "float32"),  # no bf16 instructions: the slow path, so float32
        ("float16", AVX2, {}, "float32"),
        ("bfloat16", SAPPHIRE, {}, "bfloat16"),  # bf16 in hardware: kept
        ("float32", AVX2, {}, "float32"),
        ("auto", AVX2, {}, "auto"),
        ("bfloat16", frozenset(), {}, "bfloat16"),  # flags unknown: no guess
        ("bfloat16", AVX2, {"PACKAGER_VLLM_DTYPE": "bfloat16"}, "bfloat16"),  # the caller wins
    ],
)
def test_the_serving_dtype(dtype, flags, env, served) -> None:
    chosen, why = cpu_tuning.serving_dtype(dtype, flags, env)
    assert chosen == served
    assert (why is not None) == (chosen != dtype and not env)
    if why:
        assert "PACKAGER_VLLM_DTYPE=" in why  # the note says how to keep the merge's dtype


def test_a_bad_dtype_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PACKAGER_VLLM_DTYPE must be one of"):
        cpu_tuning.serving_dtype("bfloat16", AVX2, {"PACKAGER_VLLM_DTYPE": "int3"})


def test_threads_bind_to_every_cpu_on_a_small_machine_only() -> None:
    bound = {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_tuning.thread_env([1, 0], {}) == bound
    assert cpu_tuning.thread_env(list(range(16)), {}) == {}  # vLLM's own default: one CPU for the API server
    assert cpu_tuning.thread_env([0, 1], {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}) == {}
    assert cpu_tuning.thread_env([0, 1], {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}) == {}


def _launch(tmp_path, monkeypatch, config: RuntimeConfig, flags: frozenset[str], cpus: set[int]) -> tuple:
    execs: list = []
    monkeypatch.setattr(vllm_launch.os, "execvpe", lambda *a: execs.append(a))
    monkeypatch.setattr(cpu_tuning, "cpu_flags", lambda: flags)
    monkeypatch.setattr(cpu_tuning.os, "sched_getaffinity", lambda _pid: cpus)
    monkeypatch.setattr(vllm_launch, "check_shm", lambda: None)
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config.to_json()))
    assert vllm_launch.main(["--config", str(path)]) == 0
    ((_program, argv, env),) = execs  # recorded, not performed: the engine itself runs in the e2e tests
    return argv, env


def test_the_launcher_starts_vllm_fitted_to_a_small_avx2_machine(tmp_path, monkeypatch, capsys) -> None:
    config = RuntimeConfig("baked", model_dir="/m", served_name="x", engine="vllm", vllm=VllmSettings("bfloat16"))
    argv, env = _launch(tmp_path, monkeypatch, config, AVX2, {0, 1})
    assert argv[argv.index("--dtype") + 1] == "float32" and "--enforce-eager" in argv
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0,1" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["TORCHDYNAMO_DISABLE"] == "1"  # no compiler in the image: logprobs requests must not compile
    err = capsys.readouterr().err
    assert "serving the bfloat16 weights in float32" in err and "binding vLLM's threads to CPUs 0,1" in err


def test_a_gpu_image_is_left_as_the_plan_says(tmp_path, monkeypatch) -> None:
    settings = VllmSettings("bfloat16", device="cuda")
    config = RuntimeConfig("baked", model_dir="/m", served_name="x", engine="vllm", vllm=settings)
    argv, env = _launch(tmp_path, monkeypatch, config, AVX2, {0, 1})
    assert argv[argv.index("--dtype") + 1] == "bfloat16" and "--enforce-eager" not in argv
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env and "TORCHDYNAMO_DISABLE" not in env
