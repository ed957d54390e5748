"""What the sizing decides, checked by vLLM 0.32.0 itself (the version the GPU image pins; the CPU runtime image
carries it): every GPU command line packager renders is accepted by that version's own argument parser, and a
CPU image of a model whose config claims a long context starts and answers, where the old fixed 1 GiB KV space
made vLLM refuse it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess

import pytest
import torch

from packager.demo import build_base
from packager.package import package
from packager.planning.job import plan_package
from packager.runtime.config import RuntimeConfig, VllmSettings
from packager.runtime.vllm_launch import vllm_argv
from packager.sizes import Target
from tests.e2e import containers
from tests.e2e.test_vllm_images import SHM, _completion, _greedy, _same
from tests.requests import package_request
from tests.sparse_models import LLAMA3, save_lora_by_hand, save_sparse_llama

pytestmark = pytest.mark.e2e

# parse, validate and build the engine arguments exactly as `vllm serve` does, for each command line on stdin
PARSE = """
import json, os, sys
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
lines = json.load(sys.stdin)
for argv in lines:
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    os.makedirs(args.model, exist_ok=True)  # the engine arguments resolve the model folder the image would hold
    AsyncEngineArgs.from_cli_args(args)
print(len(lines))
"""


def _settings_space() -> list[VllmSettings]:
    """Every flag the GPU launcher can set, each value it can take, in combinations that cover each pair."""
    pooling = (None, {"task": "embed", "seq_pooling_type": "MEAN", "use_activation": False},
               {"task": "classify", "seq_pooling_type": "CLS", "use_activation": True})  # fmt: skip
    values = itertools.product(
        ("auto", "bfloat16", "float16", "float32"), (None, "bitsandbytes", "fp8"), pooling, ((1, 1), (4, 1), (8, 2)),
        (None, 256), (None, "fp8"), (False, True),
    )  # fmt: skip
    return [
        VllmSettings(dtype, 131072, "base", 64, 3, "cuda", quant, pool, tp, pp, seqs, 0.9, kv, ep)
        for dtype, quant, pool, (tp, pp), seqs, kv, ep in values
    ]


def _command_lines(planned: list[RuntimeConfig]) -> list[list[str]]:
    lines = []
    for config in planned:
        for layout in ("baked", "shared"):
            shaped = dataclasses.replace(
                config, layout=layout, model_dir="/models/merged", served_name="chat", base_dir="/base",
                adapters=(("sql", "/adapters/sql"), ("chat", "/adapters/chat")),
            )  # fmt: skip
            lines.append(vllm_argv(shaped, "0.0.0.0", 8000, python="python3")[3:])  # after `python3 -m MODULE`
    return lines


@pytest.fixture(scope="module")
def planned_gpu_runtimes(tmp_path_factory) -> list[RuntimeConfig]:
    """runtime.json of real GPU plans (sparse Llama-3.1 bases: 8B, 70B, 405B; baked and shared, fp8 cache), and
    the settings space beside them."""
    root, configs = tmp_path_factory.mktemp("gpu-plans"), []
    for name in ("8b", "70b", "405b"):
        hidden, intermediate, layers, heads, kv, _ = LLAMA3[name]
        base = str(root / name)
        save_sparse_llama(base, hidden, intermediate, layers, 32000, heads=heads, kv_heads=kv, context=131072)
        lora = save_lora_by_hand(str(root / f"{name}-lora"), base, hidden, layers, targets=("q_proj",))
        for layout, kv_dtype in (("baked", "auto"), ("shared", "fp8")):
            request = package_request(
                (("chat", lora),), layout, "", "registry.example/acme/chat:1", base=base, device="cuda",
                runtime="vllm", verify=False, target=Target(kv_cache_dtype=kv_dtype), work=str(root / "work"),
            )  # fmt: skip
            if name == "405b" and layout == "baked":
                continue  # two nodes: only a shared image deploys (refused at plan time)
            configs.append(plan_package(request).plan.image.runtime)
    base = configs[0]
    return configs + [dataclasses.replace(base, vllm=settings) for settings in _settings_space()]


def test_every_gpu_command_line_is_accepted_by_vllm_0_32s_own_parser(planned_gpu_runtimes, vllm_image, engine):
    lines = _command_lines(planned_gpu_runtimes)
    assert any("--pipeline-parallel-size" in line for line in lines) and any("--lora-modules" in line for line in lines)
    argv = ["docker", "-H", engine.docker_host, "run", "--rm", "-i", "--network", "none", "--user", "0",
            "--entrypoint", "python3"]  # fmt: skip
    done = subprocess.run([*argv, vllm_image, "-c", PARSE], input=json.dumps(lines), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(len(lines))


def test_the_parser_check_fails_on_a_flag_vllm_does_not_know(vllm_image, engine) -> None:
    """The check above can fail: one unknown flag and vLLM's parser exits 2."""
    argv = ["docker", "-H", engine.docker_host, "run", "--rm", "-i", "--network", "none", "--entrypoint", "python3"]
    line = [["--model", "/models/merged", "--tensor-parallel-sizes", "2"]]
    done = subprocess.run([*argv, vllm_image, "-c", PARSE], input=json.dumps(line), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr


@pytest.fixture(scope="module")
def long_context(tmp_path_factory) -> str:
    """A tiny Llama (8 layers, 2 KV heads of 64, fp32: 8 KiB a token) whose config claims 131072 positions: one
    full sequence needs 1 GiB of KV, which vLLM's default 1 GiB space cannot hold with its null block."""
    root = tmp_path_factory.mktemp("long-context")
    os.chmod(root, 0o755)
    base = build_base(str(root / "base"), seed=3, hidden_size=256, layers=8, heads=4)
    with open(os.path.join(base, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump({**config, "max_position_embeddings": 131072}, f)
    for name in os.listdir(base):
        os.chmod(os.path.join(base, name), 0o644)
    return base


def test_a_cpu_image_of_a_long_context_model_starts_and_answers(long_context, vllm_image, docker_client, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from packager.demo import build_adapter

    adapter = build_adapter(long_context, str(tmp_path / "lora"), seed=4)
    request = package_request((("long", adapter),), "baked", vllm_image, "demo/vllm-long:1", work=str(tmp_path / "w"),
                             quiet=True, builder="docker", runtime="vllm", verify=False)  # fmt: skip
    report = package(request, log=lambda _line: None)
    vllm = containers.runtime_json(report.context)["vllm"]
    assert (vllm["max_model_len"], vllm["kv_cache_space_gib"]) == (131072, 2)
    merged = str(tmp_path / "w" / "merged")
    expected = _greedy(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32),
                       AutoTokenizer.from_pretrained(merged))  # fmt: skip
    try:
        container = containers.start(docker_client, report.image, shm_size=SHM)
        containers.wait_healthy(container, timeout=400)
        assert _same(_completion(container, "long"), expected), expected
        container.remove(force=True)
        # what the plan used to leave: the 1 GiB default, which vLLM refuses for one 131072-token sequence
        code, logs, _ = containers.run_to_exit(docker_client, report.image, shm_size=SHM,
                                               environment={"VLLM_CPU_KVCACHE_SPACE": "1"})  # fmt: skip
        assert code != 0 and "max seq len (131072)" in logs, logs[-2000:]
    finally:
        docker_client.images.remove(report.image, force=True)
