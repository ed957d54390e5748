"""`package --dry-run` on sparse Llama-3.1-shaped bases (headers only): the GPU counts of issue 23's acceptance,
the arithmetic and what the pool buys printed, vLLM started with what was sized, CPU plans that start, and a
405B shared-layout plan that reads no weight."""

from __future__ import annotations

import json
import os

import pytest

from packager.cli.main import main
from tests.sparse_models import LLAMA3, save_lora_by_hand, save_sparse_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """name -> (base, adapter): Llama-3.1 shapes at full context (131072); the 70B and 405B with a 32000-token
    vocabulary so that quantizing their widest tensor fits this machine's plan-time memory check."""
    root, made = tmp_path_factory.mktemp("sparse-llama"), {}
    for name, vocab in (("8b", None), ("70b", 32000), ("405b", 32000)):
        hidden, intermediate, layers, heads, kv, full_vocab = LLAMA3[name]
        base = str(root / name / "base")
        save_sparse_llama(base, hidden, intermediate, layers, vocab or full_vocab, heads=heads, kv_heads=kv,
                          context=131072)  # fmt: skip
        made[name] = (base, save_lora_by_hand(str(root / name / "lora"), base, hidden, layers, targets=("q_proj",)))
    return made


def dry_run(capsys, paths, *flags: str, layout: str = "baked", device: str = "cuda") -> tuple[str, dict]:
    base, adapter = paths
    argv = ["package", "--adapter", f"chat={adapter}", "--base", base, "--dry-run", "--layout", layout]
    argv += ["--device", device, "--no-verify", *flags]
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def test_an_8b_at_full_context_plans_one_gpu_with_the_kv_arithmetic_and_what_it_buys(llama, capsys) -> None:
    text, plan = dry_run(capsys, llama["8b"])
    assert "size:    1 GPU(s) x 1 node(s)" in text
    assert "KV 128.0 MiB per 1k tokens; one 131,072-token sequence takes 16.0 GiB per GPU" in text
    assert "start rule: 15.0 GiB + 2.7 GiB + 16.0 GiB = 33.6 GiB <= 72.0 GiB" in text
    assert "3.4 sequence(s) of 131,072 tokens or 108.7 of 4,096 at once" in text
    vllm = plan["image"]["runtime"]["vllm"]
    assert vllm["max_model_len"] == 131072 and "max_num_seqs" not in vllm, "a cap only when asked for"
    assert plan["sizing"]["tensor_parallel"] == 1 and plan["sizing"]["kv_tokens"] > 400_000


def test_on_24_gib_gpus_an_8b_takes_two_or_one_at_a_shorter_context_and_nothing_is_refused(llama, capsys) -> None:
    text, _ = dry_run(capsys, llama["8b"], "--gpu-memory", "24")
    assert "size:    2 GPU(s) x 1 node(s)" in text
    assert "or: 1 GPU(s) (tensor parallel 1) with --max-model-len 42752" in text
    text, _ = dry_run(capsys, llama["8b"], "--gpu-memory", "24", "--max-model-len", "8192")
    assert "size:    1 GPU(s) x 1 node(s)" in text


@pytest.mark.parametrize(
    ("flags", "gpus"),
    [((), 4), (("--max-model-len", "8192"), 2), (("--quantize", "fp8"), 2)],
    ids=["bf16-full-context", "bf16-8192", "fp8"],
)
def test_a_70b_plans_four_gpus_at_full_context_and_two_shorter_or_in_fp8(llama, capsys, flags, gpus) -> None:
    text, plan = dry_run(capsys, llama["70b"], *flags)
    assert f"size:    {gpus} GPU(s) x 1 node(s)" in text and "start rule:" in text and "at once" in text
    assert plan["image"]["runtime"]["vllm"].get("tensor_parallel_size", 1) == gpus


def test_a_405b_plans_two_nodes_in_bf16_and_one_in_fp8(llama, capsys) -> None:
    text, plan = dry_run(capsys, llama["405b"], layout="shared")
    assert "size:    8 GPU(s) x 2 node(s)" in text and plan["sizing"]["pipeline_parallel"] == 2
    assert plan["deploy"]["targets"] == ["kserve"], "no target named: only the one that spans nodes"
    fp8, _ = dry_run(capsys, llama["405b"], "--quantize", "fp8-load", layout="shared")
    assert "size:    8 GPU(s) x 1 node(s)" in fp8


def test_a_named_target_that_cannot_span_nodes_is_refused_naming_it(llama, capsys) -> None:
    base, adapter = llama["405b"]
    argv = ["package", "--adapter", f"big={adapter}", "--base", base, "--dry-run", "--layout", "shared", "--device",
            "cuda", "--target", "compose"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "and --target compose runs on one" in err[0]


def test_a_cpu_plan_sizes_vllms_kv_space_to_one_sequence_of_its_context(llama, capsys) -> None:
    """The old plan kept 131072 tokens with a fixed 1 GiB VLLM_CPU_KVCACHE_SPACE: vLLM refused to start."""
    text, plan = dry_run(capsys, llama["8b"], "--max-model-len", "16384", device="cpu")
    vllm = plan["image"]["runtime"]["vllm"]
    assert vllm["max_model_len"] == 16384 and vllm["kv_cache_space_gib"] == 5  # 4 GiB in float32, + a block
    assert plan["sizing"]["memory_request_bytes"] >= 5 << 30
    assert "KV space 5 GiB (VLLM_CPU_KVCACHE_SPACE" in text


def test_a_405b_shared_dry_run_reads_no_weight(llama, capsys) -> None:
    """811 GB of (sparse) weights: the plan reads headers and configs only, and says what is not pinned yet."""
    with open("/proc/self/io") as f:
        before = int(next(line for line in f if line.startswith("rchar")).split()[1])
    text, plan = dry_run(capsys, llama["405b"], layout="shared")
    with open("/proc/self/io") as f:
        read = int(next(line for line in f if line.startswith("rchar")).split()[1]) - before
    size = os.path.getsize(os.path.join(llama["405b"][0], "model.safetensors"))
    assert read < 200 << 20 < size, f"read {read} bytes of a {size}-byte base"
    assert "1 base file not pinned yet: hashed when the image is rendered" in text
    assert [f["sha256"] for f in plan["base"]["files"] if f["path"] == "model.safetensors"] == [None]
