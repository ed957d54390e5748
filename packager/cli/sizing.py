"""The sizing flags of `package` and `render`: the target hardware, vLLM's memory settings and the capacity to
reserve, turned into the planner's Target (packager/sizing reads it)."""

from __future__ import annotations

import argparse

from packager.sizes import KV_DTYPES, Target

# the serving pod's sizing (packager/sizing): flag, Target field, type, default, help
SIZING_FLAGS = (
    ("--gpu-memory", "gpu_memory_gib", float, 80.0,
     "each GPU's memory in GiB as CUDA reports it (an '80 GB' H100 shows 79.2; default 80)"),
    ("--gpus-per-node", "gpus_per_node", int, 8,
     "GPUs per node: tensor parallelism stays in one, pipeline stages span nodes (default 8)"),
    ("--gpu-memory-utilization", "gpu_memory_utilization", float, 0.9,
     "vLLM's share of each GPU: weights, its reserve and the KV pool must fit it (default 0.9, vLLM's)"),
    ("--max-num-seqs", "max_num_seqs", int, None,
     "vLLM's cap on sequences scheduled at once; reserves no memory (default vLLM's: 1024 on 70+ GiB GPUs, "
     "256 on smaller ones, 128 on CPU)"),
    ("--kv-tokens", "kv_tokens", int, None,
     "guarantee a KV pool of N tokens (of max-model-len sequences); default: what is left after vLLM's start rule"),
    ("--concurrency", "concurrency", int, None,
     "guarantee KV for N sequences at once of --tokens-per-request tokens (default: max-model-len)"),
    ("--tokens-per-request", "tokens_per_request", int, None, "the sequence length --concurrency is sized for"),
    ("--cpu-memory", "cpu_memory_gib", float, 64.0,
     "--device cpu: the node's memory in GiB; vLLM's KV space and max-model-len are fitted to it (default 64)"),
)  # fmt: skip


def add_sizing_flags(p: argparse.ArgumentParser) -> None:
    """Every sizing flag, each saying its default."""
    group = p.add_argument_group("sizing (vLLM's start rule: weights + reserve + one max-model-len sequence per GPU)")
    for flag, _field, kind, default, what in SIZING_FLAGS:
        group.add_argument(flag, type=kind, default=default, metavar="N", help=what)
    group.add_argument("--kv-cache-dtype", default="auto", choices=KV_DTYPES,
                       help="vLLM's KV cache dtype (default auto: the model's; fp8 halves a 16-bit cache)")  # fmt: skip
    group.add_argument("--enable-expert-parallel", action="store_true",
                       help="spread a mixture-of-experts model's experts over the GPUs (vLLM's flag; the plan turns "
                       "it on where a block-quantized MoE cannot be split otherwise)")  # fmt: skip


def target_from_args(args: argparse.Namespace) -> Target:
    """The sizing flags as the planner's Target."""
    sized = {field: getattr(args, flag.removeprefix("--").replace("-", "_")) for flag, field, *_ in SIZING_FLAGS}
    return Target(args.device, kv_cache_dtype=args.kv_cache_dtype, expert_parallel=args.enable_expert_parallel,
                  **sized)  # fmt: skip
