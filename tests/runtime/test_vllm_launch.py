"""The vLLM launcher: its command line (pure), its runtime.json, and the base check before the engine starts."""

from __future__ import annotations

import json

import pytest

from packager.runtime import vllm_launch
from packager.runtime.config import ConfigError, RuntimeConfig, VllmSettings, parse_config

SHARED = RuntimeConfig(
    "shared",
    base_dir="/base",
    adapters=(("sql", "/adapters/sql"), ("chat", "/adapters/a=b")),
    lock="/opt/packager/packager.lock.json",
    engine="vllm",
    vllm=VllmSettings("float32", 256, "demo", 32, 3),
)
BAKED = RuntimeConfig(
    "baked", model_dir="/models/merged", served_name="demo", engine="vllm", vllm=VllmSettings("bfloat16", 512)
)


def test_baked_argv_serves_the_merged_model_under_its_name() -> None:
    argv = vllm_launch.vllm_argv(BAKED, "0.0.0.0", 8000, python="python3")
    assert argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == "/models/merged" and argv[argv.index("--served-model-name") + 1] == "demo"
    assert argv[argv.index("--dtype") + 1] == "bfloat16" and argv[argv.index("--max-model-len") + 1] == "512"
    assert "--enable-lora" not in argv and "--enforce-eager" in argv


def test_shared_argv_gives_every_adapter_as_json_lora_modules() -> None:
    argv = vllm_launch.vllm_argv(SHARED, "0.0.0.0", 8000)
    modules = [json.loads(a) for a in argv[argv.index("--lora-modules") + 1 :]]
    assert modules == [
        {"name": "sql", "path": "/adapters/sql", "base_model_name": "demo"},
        {"name": "chat", "path": "/adapters/a=b", "base_model_name": "demo"},  # '=' survives: JSON, not name=path
    ]
    assert argv[argv.index("--max-lora-rank") + 1] == "32" and argv[argv.index("--max-loras") + 1] == "3"
    assert argv[argv.index("--model") + 1] == "/base" and argv[argv.index("--served-model-name") + 1] == "demo"


@pytest.mark.parametrize("config", [SHARED, BAKED], ids=["shared", "baked"])
def test_runtime_json_round_trips(config) -> None:
    assert parse_config(config.to_json(), "/", env={}) == config


def test_packager_engine_configs_keep_their_shape() -> None:
    plain = RuntimeConfig("baked", model_dir="/m", served_name="x")
    assert "engine" not in plain.to_json() and "vllm" not in plain.to_json()
    with pytest.raises(ConfigError, match="need engine vllm"):
        parse_config({**plain.to_json(), "vllm": {}}, "/", env={})
    with pytest.raises(ConfigError, match=r"vllm\.max_loras"):
        parse_config({**SHARED.to_json(), "vllm": {**SHARED.vllm.to_json(), "max_loras": 0}}, "/", env={})


def test_the_wrong_base_is_refused_before_the_engine_starts(tiny, tmp_path, monkeypatch, capsys) -> None:
    execs = []
    monkeypatch.setattr(vllm_launch.os, "execvpe", lambda *a: execs.append(a))
    config = RuntimeConfig(
        "shared",
        base_dir=tiny["other_base"],
        adapters=(("a", tiny["adapter_a"]),),
        lock=tiny["lock"],
        engine="vllm",
        vllm=VllmSettings(),
    )
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config.to_json()))
    assert vllm_launch.main(["--config", str(path)]) == 3 and not execs
    assert capsys.readouterr().err.startswith("error: the base mounted at")
    right = RuntimeConfig(**{**config.__dict__, "base_dir": tiny["base"]})
    path.write_text(json.dumps(right.to_json()))
    vllm_launch.main(["--config", str(path), "--port", "9000"])
    ((_program, argv, env),) = execs  # exec is recorded here, not performed: the engine runs in the e2e tests
    assert argv[argv.index("--port") + 1] == "9000" and env["HF_HUB_OFFLINE"] == "1"


def test_too_little_shared_memory_is_refused_with_the_fix(tmp_path) -> None:
    vllm_launch.check_shm(str(tmp_path), needed=1)
    with pytest.raises(vllm_launch.NotEnoughShm, match="--shm-size 1g"):
        vllm_launch.check_shm(str(tmp_path), needed=1 << 62)
    with pytest.raises(vllm_launch.NotEnoughShm, match="0 MiB free"):
        vllm_launch.check_shm(str(tmp_path / "absent"))


def test_a_load_time_scheme_becomes_vllms_quantization_flag() -> None:
    config = RuntimeConfig(
        **{**BAKED.__dict__, "vllm": VllmSettings("bfloat16", 512, device="cuda", quantization="bitsandbytes")}
    )
    argv = vllm_launch.vllm_argv(config, "0.0.0.0", 8000)
    assert argv[argv.index("--quantization") + 1] == "bitsandbytes" and "--enforce-eager" not in argv
    assert parse_config(config.to_json(), "/", env={}) == config
    with pytest.raises(ConfigError, match=r"vllm\.quantization"):
        parse_config({**config.to_json(), "vllm": {**config.vllm.to_json(), "quantization": "gptq"}}, "/", env={})


def test_the_sized_parallelism_reaches_vllms_command_line_and_round_trips() -> None:
    """packager/sizing's choice in runtime.json (a 405B over 2 nodes of 8 GPUs, an fp8 cache, its experts spread),
    then vLLM's flags."""
    import dataclasses

    sized = dataclasses.replace(
        BAKED.vllm, device="cuda", tensor_parallel_size=8, pipeline_parallel_size=2, max_num_seqs=16,
        gpu_memory_utilization=0.9, kv_cache_dtype="fp8", enable_expert_parallel=True,
    )  # fmt: skip
    config = dataclasses.replace(BAKED, vllm=sized)
    assert parse_config(config.to_json()) == config
    argv = vllm_launch.vllm_argv(config, "0.0.0.0", 8000)
    flags = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert flags["--tensor-parallel-size"] == "8" and flags["--pipeline-parallel-size"] == "2"
    assert flags["--max-num-seqs"] == "16" and flags["--gpu-memory-utilization"] == "0.9"
    assert flags["--distributed-executor-backend"] == "ray" and flags["--kv-cache-dtype"] == "fp8"
    assert argv[-1] == "--enable-expert-parallel" or "--enable-expert-parallel" in argv
    plain = vllm_launch.vllm_argv(BAKED, "0.0.0.0", 8000)
    assert not {"--tensor-parallel-size", "--kv-cache-dtype", "--enable-expert-parallel"} & set(plain), "unsized"


def test_the_cpu_kv_space_the_plan_sized_reaches_the_engine_unless_the_caller_set_one() -> None:
    """VLLM_CPU_KVCACHE_SPACE from runtime.json's kv_cache_space_gib (1 GiB where the plan sized none), and a
    `docker run -e` still wins."""
    import dataclasses

    sized = dataclasses.replace(BAKED.vllm, kv_cache_space_gib=17)
    assert vllm_launch.engine_env({}, None, sized)["VLLM_CPU_KVCACHE_SPACE"] == "17"
    assert vllm_launch.engine_env({"VLLM_CPU_KVCACHE_SPACE": "4"}, None, sized)["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert vllm_launch.engine_env({}, None, BAKED.vllm)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    config = dataclasses.replace(BAKED, vllm=sized)
    assert parse_config(config.to_json()) == config
    with pytest.raises(ConfigError, match="kv_cache_space_gib must be a positive integer"):
        parse_config({**config.to_json(), "vllm": {**sized.to_json(), "kv_cache_space_gib": 0}})


def test_a_bad_sizing_in_runtime_json_is_refused() -> None:
    data = {**BAKED.to_json(), "vllm": {**BAKED.vllm.to_json(), "gpu_memory_utilization": 1.5}}
    with pytest.raises(ConfigError, match="gpu_memory_utilization must be in"):
        parse_config(data)
