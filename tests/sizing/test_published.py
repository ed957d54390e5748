"""The sizing against what people publicly run on vLLM: each row is a real model (its config.json values and a
sparse checkpoint whose header stores what the published one stores), the GPUs and flags of a public deployment,
and the source. The plan must choose the published layout, or say in the plan why not (the published layout then
appears among its options, with the flag that makes it start). Where a public vLLM start-up log gives the memory
it measured, the plan's figure is checked against it too.

GPU memory is what CUDA reports, as vLLM sees it: an 80 GB H100 79.2 GiB ("total_gpu_memory 79.22GiB", vLLM PR
#10511's log), a 141 GB H200 139.8 GiB, an RTX 3090 23.58 GiB (vLLM #10517's log)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

import tests.published_models as models
from packager.architecture.weights import index_base_weights
from packager.sizes import GIB, Sizing, Target
from packager.sizing import size_model

H100, H200, RTX3090 = 79.2, 139.8, 23.58


@dataclass(frozen=True)
class Deployment:
    """A public deployment: the model, the GPUs (memory, per node), the flags, the layout people run it with
    (tensor parallel, pipeline stages), the source; `planned`: the plan's own layout where it differs, and
    `explained`: the text in the plan that says why (an option naming the published layout)."""

    model: str
    gpu: float
    published: tuple[int, int]
    source: str
    length: int | None = None
    flags: dict = field(default_factory=dict)
    planned: tuple[int, int] | None = None
    explained: str = ""


DEPLOYMENTS = {
    "llama-3.1-8b-h100": Deployment(
        "llama-8b", H100, (1, 1),
        "vllm-project/recipes models/meta-llama/Llama-3.1-8B-Instruct.yaml (bf16, vram_minimum_gb 20, verified h100)",
    ),
    "llama-3.1-8b-rtx3090-20k": Deployment(
        "llama-8b", RTX3090, (1, 1),
        "vllm#10517 (kaspersiminski): 20000 tokens started on one RTX 3090, 29000 did not (vLLM 0.6's V0 engine "
        "profiled a whole max-model-len prefill; V1 profiles max_num_batched_tokens, so 0.32 holds more)",
        length=20000,
    ),
    "llama-3.1-70b-4xh100": Deployment(
        "llama-70b", H100, (4, 1),
        "docs.vllm.ai tensor parallelism: Llama-3.1-70B-Instruct with tensor_parallel_size=4; recipes "
        "Llama-3.3-70B-Instruct.yaml: bf16 vram_minimum_gb 170",
    ),
    "llama-3.1-70b-2xh100-20k": Deployment(
        "llama-70b", H100, (2, 1),
        "vllm#10517 (GRuuuuu): Llama-3.1-70B on 2 x H100 at 20000 tokens (vLLM 0.5.4, before CUDA graphs and "
        "the sampler were profiled)", length=20000, planned=(4, 1),
        explained="2 GPU(s) (tensor parallel 2) at 20,000 tokens with --gpu-memory-utilization 0.9",
    ),
    "llama-3.3-70b-fp8-h200": Deployment(
        "llama-70b-fp8", H200, (1, 1),
        "vllm-project/recipes Llama/Llama3.3-70B.md: FP8 on Hopper with --tensor-parallel-size 1, "
        "Llama3.3_Hopper.yaml kv-cache-dtype fp8", flags={"kv_cache_dtype": "fp8"},
    ),
    "llama-3.3-70b-fp8-h100": Deployment(
        "llama-70b-fp8", H100, (1, 1),
        "the same recipe on an 80 GB Hopper GPU: the full 131072-token context does not fit one", planned=(2, 1),
        flags={"kv_cache_dtype": "fp8"}, explained="1 GPU(s) (tensor parallel 1) with --max-model-len",
    ),
    "llama-3.1-405b-fp8-8xh100": Deployment(
        "llama-405b-fp8", H100, (8, 1),
        "blog.vllm.ai/2024/07/23/llama31.html: the official FP8 model natively on 8xH100; vllm#6746 logged "
        "'Loading model weights took 57.7520 GB' per GPU",
    ),
    "llama-3.1-405b-bf16-2x8xh100": Deployment(
        "llama-405b", H100, (8, 2),
        "blog.vllm.ai/2024/07/23/llama31.html: the BF16 version on multiple nodes with pipeline parallelism",
    ),
    "deepseek-v3-8xh200": Deployment(
        "deepseek-v3", H200, (8, 1),
        "vllm-project/recipes DeepSeek/DeepSeek-V3.md: 8 x H200, --tensor-parallel-size 8",
    ),
    "deepseek-v3-2x8xh100": Deployment(
        "deepseek-v3", H100, (8, 2),
        "vllm-project/recipes models/deepseek-ai/DeepSeek-V3.yaml: multi_node_tp_pp (vllm#11539: TP 8 x PP 2 on "
        "16 x H100)",
    ),
    "gpt-oss-120b-h100": Deployment(
        "gpt-oss-120b", H100, (1, 1),
        "vllm-project/recipes OpenAI/GPT-OSS.md known limitation: on H100 at TP 1 the defaults run out of "
        "memory; --gpu-memory-utilization 0.95 --max-num-batched-tokens 1024 then left 1.71 GiB of KV (vllm#27508), "
        "too little for the full context", planned=(2, 1), explained="1 GPU(s) (tensor parallel 1)",
    ),
    "gemma-3-27b-h100": Deployment(
        "gemma-3-27b", H100, (1, 1),
        "blog.google/technology/developers/gemma-3: 'the most capable model you can run on a single GPU' (H100)",
    ),
    "mixtral-8x7b-2xh100": Deployment(
        "mixtral-8x7b", H100, (2, 1),
        "hungchun0201.github.io agentic-ai-survey week 14: vllm serve Mixtral-8x7B-Instruct-v0.1 "
        "--tensor-parallel-size 2 on 2 x H100 80GB",
    ),
    "qwen3-235b-fp8-4xh100": Deployment(
        "qwen3-235b-fp8", H100, (4, 1),
        "vllm#21348: Qwen3-235B-A22B-FP8 with --tensor-parallel-size 4 on 4 x H100 ('Available KV cache memory: "
        "8.11 GiB'); recipes Qwen/Qwen3.md: fp8 TP capped at 4", flags={"gpus_per_node": 4},
    ),
}  # fmt: skip

BUILDERS = {
    "llama-8b": lambda: (models.LLAMA_8B, models.llama(models.LLAMA_8B)),
    "llama-70b": lambda: (models.LLAMA_70B, models.llama(models.LLAMA_70B)),
    "llama-405b": lambda: (models.LLAMA_405B, models.llama(models.LLAMA_405B)),
    "llama-70b-fp8": models.llama_70b_fp8,
    "llama-405b-fp8": models.llama_405b_fp8,
    "deepseek-v3": lambda: (models.DEEPSEEK_V3, models.deepseek_v3(models.DEEPSEEK_V3)),
    "gpt-oss-120b": lambda: (models.GPT_OSS_120B, models.gpt_oss(models.GPT_OSS_120B)),
    "gemma-3-27b": lambda: (models.GEMMA3_27B, models.gemma3(models.GEMMA3_27B)),
    "mixtral-8x7b": lambda: (models.MIXTRAL_8X7B, models.mixtral(models.MIXTRAL_8X7B)),
    "qwen3-235b-fp8": lambda: (models.QWEN3_235B_FP8, models.qwen3_moe(models.QWEN3_235B_FP8)),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Every model as a sparse folder (headers only: seconds, no disk)."""
    root = tmp_path_factory.mktemp("published")
    made = {}
    for name, build in BUILDERS.items():
        config, entries = build()
        models.write_sparse(str(root / name), config, entries)
        made[name] = str(root / name)
    return made


def plan(folder: str, deployment: Deployment) -> Sizing:
    """The sizing of the folder as a base: its config and safetensors headers, read as a package plan reads them."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    tensors = index_base_weights(folder, allow_pickle=False).tensors
    target = Target("cuda", gpu_memory_gib=deployment.gpu, **deployment.flags)
    return size_model(config, tensors, target, deployment.length, path=folder)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_the_plan_matches_what_people_run_or_says_why(name, folders) -> None:
    deployment = DEPLOYMENTS[name]
    sizing = plan(folders[deployment.model], deployment)
    expected = deployment.planned or deployment.published
    assert (sizing.tensor_parallel, sizing.pipeline_parallel) == expected, "\n".join(sizing.arithmetic)
    if deployment.planned:
        assert any(deployment.explained in option for option in sizing.options), sizing.options
    assert sizing.concurrency[0][1] >= 1, "vLLM's start rule: the pool holds one max-model-len sequence"


def test_there_are_at_least_eight_models_and_every_row_names_its_source() -> None:
    assert len({d.model for d in DEPLOYMENTS.values()}) >= 8
    assert all(len(d.source) > 20 for d in DEPLOYMENTS.values())


def test_weights_per_gpu_match_what_vllm_logged_loading_them(folders) -> None:
    """vllm#6746: the 405B FP8 at tensor parallel 8 took 57.75 GiB a GPU; vllm#23278: gpt-oss-120b on one H100
    took 65.97 GiB (its MXFP4 experts padded to the kernel's tiles: the files hold 60.8 GiB)."""
    fp8 = plan(folders["llama-405b-fp8"], DEPLOYMENTS["llama-3.1-405b-fp8-8xh100"])
    assert fp8.weights_per_gpu / GIB == pytest.approx(57.75, rel=0.03)
    oss = plan(folders["gpt-oss-120b"], DEPLOYMENTS["gpt-oss-120b-h100"])
    assert oss.weights_bytes / GIB == pytest.approx(65.97, rel=0.03)


def test_the_kv_pool_planned_is_not_more_than_vllm_measured(folders) -> None:
    """vllm#21348: Qwen3-235B-FP8 on 4 x H100 had 8.11 GiB of KV per GPU; the plan promises no more, and not
    much less."""
    sizing = plan(folders["qwen3-235b-fp8"], DEPLOYMENTS["qwen3-235b-fp8-4xh100"])
    assert 0.85 * 8.11 <= sizing.kv_pool_per_gpu / GIB <= 8.11


def test_the_mixtral_header_bytes_are_the_published_checkpoints(folders) -> None:
    """93,405,577,216 bytes of BF16 weights (the checkpoint's own header, as flytomelight.github.io/llm-cal
    verified it): the builder stores what the model does (within a norm vector)."""
    assert sum(t.nbytes for t in index_base_weights(folders["mixtral-8x7b"], False).tensors.values()) == (
        pytest.approx(93_405_577_216, abs=16384)
    )
