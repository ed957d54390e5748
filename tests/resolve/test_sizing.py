"""The pod sizing against hand computation, on configs of real shapes (Llama-3 8B/70B/405B, GQA), from header-only
tensor tables: weights as served, the KV cache, tensor and pipeline parallelism, and the one-line refusal."""

from __future__ import annotations

import json

import pytest

from packager.errors import UserInputError
from packager.resolve.sizing import GIB, kv_bytes_per_token, served_bytes, size
from packager.sizes import Target
from tests.sparse_models import LLAMA3 as SHAPES
from tests.sparse_models import llama3_config as config
from tests.sparse_models import llama3_tensors as tensors


def hand_params(name: str) -> tuple[int, int]:
    """(linear weights, embeddings + head + norms) parameter counts, by hand."""
    hidden, intermediate, layers, heads, kv, vocab = SHAPES[name]
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv * head_dim
    linear = layers * (attention + 3 * hidden * intermediate)
    return linear, 2 * vocab * hidden + (2 * layers + 1) * hidden


def test_weights_as_served_are_counted_by_hand() -> None:
    linear, other = hand_params("70b")
    assert served_bytes(tensors("70b"), "none") == 2 * (linear + other)
    assert served_bytes(tensors("70b"), "w8a8") == linear + 2 * other  # embeddings and head stay 16-bit
    assert served_bytes(tensors("70b"), "w4a16") == linear // 2 + 2 * other
    assert 2 * (linear + other) / 1e9 == pytest.approx(141.1, abs=0.1)  # what "70B in bf16 is ~140 GB" says


def test_the_kv_cache_per_token_is_two_x_layers_x_kv_heads_x_head_size_x_bytes() -> None:
    assert kv_bytes_per_token(config("70b"), 2) == 2 * 80 * 8 * 128 * 2 == 327680
    assert kv_bytes_per_token({**config("70b"), "num_key_value_heads": None}, 2) == 2 * 80 * 64 * 128 * 2  # MHA


def _sizing(name: str, scheme: str = "none", **target):
    return size(config(name), served_bytes(tensors(name), scheme), 2, 8192, Target("cuda", **target))


def test_a_70b_in_bf16_takes_four_80gib_gpus_and_w8a8_takes_two() -> None:
    """bf16: 131.4 GiB + 40 GiB of KV (16 x 8192 tokens) = 171.4 GiB; each GPU offers 80 x 0.9 - 2 = 70 GiB:
    2 GPUs give 85.7 each (too much), 4 give 42.9. w8a8: 67.7 + 40 = 107.7 GiB: 2 GPUs give 53.8."""
    bf16, w8a8 = _sizing("70b"), _sizing("70b", "w8a8")
    assert (bf16.tensor_parallel, bf16.pipeline_parallel) == (4, 1)
    assert (w8a8.tensor_parallel, w8a8.pipeline_parallel) == (2, 1)
    assert bf16.kv_bytes == 327680 * 8192 * 16 == 40 * GIB
    assert "tensor parallel 4 x pipeline 1 = 4 GPU(s): 42.9 GiB each" in bf16.arithmetic[-1]


def test_a_w4a16_70b_with_fewer_sequences_fits_one_gpu() -> None:
    assert _sizing("70b", "w4a16", max_num_seqs=4).tensor_parallel == 1
    assert _sizing("8b").tensor_parallel == 1


def test_a_405b_spans_nodes_in_pipeline_stages() -> None:
    """bf16: 756 GiB + 63 GiB of KV = 819 GiB, over 70 GiB per GPU: more than one node of 8 (560 GiB); two nodes
    of 8 hold 51 GiB per GPU."""
    sizing = _sizing("405b", gpus_per_node=8)
    assert (sizing.tensor_parallel, sizing.pipeline_parallel, sizing.nodes) == (8, 2, 2)
    assert "2 nodes of 8 GPUs" in sizing.arithmetic[-1]


def test_tensor_parallelism_divides_the_heads() -> None:
    odd = {**config("8b"), "num_attention_heads": 40, "num_key_value_heads": 8}  # 40 heads: no 3, 6 or 7
    sizing = size(odd, 200 * GIB, 2, 4096, Target("cuda", gpu_memory_gib=80))
    assert sizing.tensor_parallel == 4


def test_a_model_that_fits_no_layout_is_refused_with_the_figures() -> None:
    """756.0 GiB of weights + 1008 GiB of KV (16 x 131072 tokens) over 64 nodes of one 16 GiB GPU (12.4 GiB
    each, 793.6 in all): no layout holds it."""
    target = Target("cuda", gpu_memory_gib=16, gpus_per_node=1)
    with pytest.raises(UserInputError, match=r"needs 756\.0 GiB of weights .* above the 12\.4 GiB each 16 GiB GPU"):
        size(config("405b"), served_bytes(tensors("405b"), "none"), 2, 131072, target)


def test_on_cpu_the_memory_request_is_weights_kv_space_and_runtime() -> None:
    sizing = size(config("8b"), 16 * GIB, 2, 8192, Target("cpu"))
    assert sizing.gpus == 0 and sizing.memory_request_bytes == (16 + 1 + 2) * GIB
    upcast = size(config("8b"), 16 * GIB, 2, 8192, Target("cpu"), upcast=True)
    assert upcast.memory_request_bytes == (32 + 1 + 2) * GIB, "vLLM serves bf16 in float32 on AVX2: room for it"
    assert "x 2 (16-bit served in float32" in upcast.arithmetic[0]


@pytest.fixture(scope="module")
def sparse_70b(tmp_path_factory) -> tuple[str, str]:
    """A Llama-2-70B-shaped bf16 base (Llama-3's 70B with a 32000-token vocabulary, so that quantizing its widest
    tensor fits this machine's plan-time memory check), a header plus a hole (no disk, no time), and a LoRA."""
    from tests.sparse_models import save_lora_by_hand, save_sparse_llama

    root = tmp_path_factory.mktemp("sparse-70b")
    hidden, intermediate, layers, heads, kv, _ = SHAPES["70b"]
    base, vocab = str(root / "base"), 32000
    save_sparse_llama(base, hidden, intermediate, layers, vocab, heads=heads, kv_heads=kv, context=8192)
    return base, save_lora_by_hand(str(root / "lora"), base, hidden, layers, targets=("q_proj",))


def _dry_run(capsys, base: str, adapter: str, *flags: str) -> tuple[str, dict]:
    from packager.cli.main import main

    argv = ["package", "--adapter", f"chat={adapter}", "--base", base, "--dry-run", "--layout", "baked"]
    argv += ["--device", "cuda", *flags]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def test_a_70b_dry_run_plans_tensor_parallelism_with_the_arithmetic(sparse_70b, capsys) -> None:
    text, plan = _dry_run(capsys, *sparse_70b, "--gpu-memory", "80")
    assert "size:    4 GPU(s) x 1 node(s)" in text and "tensor parallel 4 x pipeline 1 = 4 GPU(s)" in text
    # 68,976,648,192 parameters x 2 bytes; 2 x 80 layers x 8 KV heads x 128 x 2 bytes = 320 KiB per token
    assert "weights 128.5 GiB + KV cache 40.0 GiB (320.0 MiB per 1k tokens x 16 sequences)" in text
    assert "each GPU offers 80 GiB x 0.9 - 2.0 GiB (activations, CUDA graphs) = 70.0 GiB" in text
    vllm = plan["image"]["runtime"]["vllm"]
    assert (vllm["tensor_parallel_size"], vllm["max_num_seqs"], vllm["gpu_memory_utilization"]) == (4, 16, 0.9)
    _, quantized = _dry_run(capsys, *sparse_70b, "--gpu-memory", "80", "--quantize", "fp8")
    assert quantized["sizing"]["tensor_parallel"] == 2, "fp8 halves the linear weights: fewer GPUs"


def test_a_405b_dry_run_plans_two_nodes_and_says_where_that_deploys(tmp_path, capsys) -> None:
    """Pipeline stages across nodes, planned from the headers alone; a baked image cannot span nodes, so the
    plan is refused in one line naming the multi-node LLMInferenceService (tests/deploy renders it)."""
    from packager.cli.main import main
    from tests.sparse_models import save_lora_by_hand, save_sparse_llama

    hidden, intermediate, layers, heads, kv, _ = SHAPES["405b"]
    base = str(tmp_path / "base")
    save_sparse_llama(base, hidden, intermediate, layers, 32000, heads=heads, kv_heads=kv, context=8192)
    adapter = save_lora_by_hand(str(tmp_path / "lora"), base, hidden, layers, targets=("q_proj",))
    argv = ["package", "--adapter", f"big={adapter}", "--base", base, "--dry-run", "--layout", "baked", "--device",
            "cuda", "--gpus-per-node", "8", "--work", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the model spans 2 nodes (tensor parallel 8 x pipeline 2 = 16 GPU(s)" in err[0]
    assert err[0].endswith("use --layout shared --target kserve")
