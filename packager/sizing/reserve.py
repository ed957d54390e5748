"""What vLLM takes from each GPU's `gpu_memory_utilization` share before the KV cache gets the rest: besides the
weights, the activation peak of its start-up profiling, memory outside torch (CUDA libraries, NCCL and the custom
all-reduce buffers), and, since vLLM 0.21, its estimate of the CUDA graphs (vllm/v1/worker/gpu_worker.py,
`determine_available_memory`).

How the figures were chosen. vLLM measures them at start; packager predicts them from the config:
- the activation peak is the larger of the profiled forward pass (`max_num_batched_tokens` tokens through the widest
  layer) and the sampler's dummy run, which holds fp32 logits for `max_num_seqs` sequences and sorts them for
  top-p/top-k: SAMPLER_BYTES per vocabulary entry per sequence, plus ACTIVATION_BASE. Fitted to vLLM's own profiled
  peaks as llm-d's capacity planner published them (vLLM 0.19, H100, 28 models: Llama 1.89 GiB, Qwen2 2.25,
  Gemma-2 3.65, Granite 0.85, phi-4 1.52; the formula gives 1.91, 2.23, 3.62, 0.86, 1.54). Mixture-of-experts
  models add MOE_ACTIVATION for the fused-MoE workspaces: 0.3-0.6 GiB more on Mixtral, Qwen-MoE and DeepSeek-V2
  there, but the FP8-block and MXFP4 kernels take more, and the plan must not promise KV a real start-up did not
  have: with 3 GiB, Qwen3-235B-FP8 on 4 x H100 is planned 7.9 GiB of KV per GPU where vLLM logged 8.11 (#21348),
  and gpt-oss-120b on one H100 -1.8 GiB where it logged -2.14 (#23278);
- memory outside torch: NON_TORCH_TP1 on one GPU, NON_TORCH_TP per GPU under tensor parallelism (same source);
- CUDA graphs: CUDA_GRAPHS per GPU (vLLM's estimates run 0.2-1.3 GiB; more for mixture-of-experts models);
- LoRA slots (a shared image): vLLM allocates, for every Linear it wraps, `max_loras` A and B buffers of
  `max_lora_rank` (vllm/lora/layers/base_linear.py); counted whole on every GPU (one side of each is split by
  tensor parallelism, the other is not: an upper bound).
vLLM's own defaults for the batch it profiles depend on the GPU: 8192 tokens and 1024 sequences from 70 GiB up,
16384 and 1024 from 160 GiB, else 2048 and 256 (vllm/engine/arg_utils.py, the OpenAI server's usage context)."""

from __future__ import annotations

from dataclasses import dataclass

from packager.sizes import GIB, gib_text
from packager.sizing.shape import ModelShape

SAMPLER_BYTES = 14
ACTIVATION_BASE = int(0.2 * GIB)
MOE_ACTIVATION = 3 * GIB
NON_TORCH_TP1 = int(0.27 * GIB)
NON_TORCH_TP = int(2.1 * GIB)
CUDA_GRAPHS = int(0.5 * GIB)
CUDA_GRAPHS_MOE = 1 * GIB
ACTIVATION_BYTES = 2  # the activations' dtype (bf16/fp16)


@dataclass(frozen=True)
class Batch:
    """The batch vLLM profiles at start: tokens in one step, and sequences the scheduler runs at once."""

    tokens: int
    sequences: int


def default_batch(gpu_memory_gib: float, max_num_seqs: int | None = None) -> Batch:
    """vLLM's defaults for a GPU of this size (the OpenAI server's), `max_num_seqs` where the user set it."""
    if gpu_memory_gib >= 160:
        tokens, sequences = 16384, 1024
    elif gpu_memory_gib >= 70:
        tokens, sequences = 8192, 1024
    else:
        tokens, sequences = 2048, 256
    return Batch(tokens, max_num_seqs or sequences)


@dataclass(frozen=True)
class Reserve:
    """One GPU's share of `gpu_memory_utilization` that is neither weights nor KV cache."""

    activations: int
    non_torch: int
    cuda_graphs: int
    lora: int = 0

    @property
    def total(self) -> int:
        """Everything reserved."""
        return self.activations + self.non_torch + self.cuda_graphs + self.lora

    def describe(self) -> str:
        """The reserve and its parts, for the plan."""
        lora = f", LoRA slots {gib_text(self.lora)}" if self.lora else ""
        return (
            f"{gib_text(self.total)} (activations {gib_text(self.activations)}, outside torch "
            f"{gib_text(self.non_torch)}, CUDA graphs {gib_text(self.cuda_graphs)}{lora})"
        )


def gpu_reserve(shape: ModelShape, tp: int, batch: Batch, lora: int = 0) -> Reserve:
    """The reserve of one GPU of a `tp`-way tensor-parallel group for this model and profiled batch (`lora`: the
    bytes of its LoRA buffers)."""
    sampler = SAMPLER_BYTES * shape.vocab * batch.sequences
    width = max(shape.intermediate, shape.moe_intermediate * max(shape.experts_per_token, 1))
    forward = batch.tokens * (3 * width // tp + shape.hidden) * ACTIVATION_BYTES  # gate/up, its product, residual
    activations = ACTIVATION_BASE + max(sampler, forward) + (MOE_ACTIVATION if shape.moe else 0)
    graphs = CUDA_GRAPHS_MOE if shape.moe else CUDA_GRAPHS
    return Reserve(activations, NON_TORCH_TP if tp > 1 else NON_TORCH_TP1, graphs, lora)
