"""GPU layouts sized by vLLM's own start rule: on every GPU, the weights' share, the engine's reserve and the KV
of one `max_model_len` sequence must fit `gpu_memory_utilization` of its memory (vLLM refuses to start otherwise:
"To serve at least one request with the model's max seq len ..."). The plan takes the fewest GPUs that pass, tensor
parallelism within a node first (dividing the heads as vLLM requires), then pipeline stages across nodes; what is
left of each GPU is the shared KV pool, which the plan turns into tokens and concurrent sequences. Capacity is
reserved only when asked (`--kv-tokens`, `--concurrency` with `--tokens-per-request`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from packager.errors import UserInputError
from packager.sizes import GIB, Sizing, Target, gib_text
from packager.sizing.kv import KvLayout, concurrency, longest_context, per_token, worst_sequence_bytes
from packager.sizing.reserve import ACTIVATION_BYTES, Batch, Reserve, default_batch, gpu_reserve
from packager.sizing.shape import ModelShape
from packager.sizing.weights import Weights

MAX_NODES = 64
TYPICAL_TOKENS = 4096  # the request length concurrency is also stated for
RUNTIME_BYTES = 2 * GIB  # host memory of one server or worker process: Python, torch, the engine, the tokenizer
SHORTEST_OFFER = 2048  # fewer GPUs at a shorter context are offered down to this length
MAX_UTILIZATION = 0.95  # the largest share of a GPU offered (vLLM's recipes go to 0.95 where memory is tight)


@dataclass(frozen=True)
class Layout:
    """GPUs of one replica: tensor-parallel per node, pipeline stages across nodes, experts spread or split."""

    tp: int
    pp: int = 1
    expert_parallel: bool = False
    why_ep: str = ""

    @property
    def gpus(self) -> int:
        """GPUs in all."""
        return self.tp * self.pp

    def describe(self) -> str:
        """As the plan prints it."""
        where = "one node" if self.pp == 1 else f"{self.pp} nodes of {self.tp} GPUs"
        return f"tensor parallel {self.tp} x pipeline {self.pp} = {self.gpus} GPU(s) ({where})"


@dataclass(frozen=True)
class Fit:
    """One layout against one GPU's budget: per stage, the weights and KV pool of each of its GPUs."""

    layout: Layout
    weights: list[int]
    reserve: Reserve
    pools: list[int]
    kv: KvLayout


def size_gpu(
    shape: ModelShape, weights: Weights, target: Target, length: int, dtype_bytes: int, lora: tuple[int, int] = (0, 0)
) -> Sizing:
    """The fewest GPUs that start this model at `length` tokens (and hold the capacity asked for), with the
    leftover KV stated and the shorter-context options on fewer GPUs; refused in one line when none does.
    `lora`: vLLM's LoRA slots and their rank (a shared image), whose buffers it allocates at start."""
    batch = default_batch(target.gpu_memory_gib, target.max_num_seqs)
    budget = int(target.gpu_memory_gib * GIB * target.gpu_memory_utilization)
    fits = [_fit(shape, weights, layout, budget, batch, dtype_bytes, lora) for layout in layouts(shape, target)]
    needed = [_needs(shape, fit.kv, length, target) for fit in fits]
    chosen = next((i for i, fit in enumerate(fits) if _holds(fit.pools, needed[i])), None)
    if chosen is None:
        raise _refusal(shape, fits[-1], length, budget, target)
    fit = fits[chosen]
    options = _options(shape, fits[:chosen], length, target)
    return _sizing(shape, weights, fit, length, budget, target, options)


def layouts(shape: ModelShape, target: Target) -> list[Layout]:
    """Every layout vLLM accepts, fewest GPUs first: tensor parallelism within a node, then pipeline stages."""
    within = [_layout(shape, tp, target.expert_parallel) for tp in range(1, target.gpus_per_node + 1)]
    within = [layout for layout in within if layout is not None]
    if not within:
        raise UserInputError(
            f"no tensor-parallel size up to --gpus-per-node {target.gpus_per_node} divides the model's "
            f"{shape.heads} attention and {shape.kv_heads} KV heads; pass a --gpus-per-node vLLM can split it over"
        )
    widest = within[-1]
    stages = range(2, min(len(shape.layers), MAX_NODES) + 1)
    return within + [Layout(widest.tp, pp, widest.expert_parallel, widest.why_ep) for pp in stages]


def _layout(shape: ModelShape, tp: int, asked_ep: bool) -> Layout | None:
    """The layout at `tp`, or None where vLLM cannot split the heads that way; expert parallelism where a
    block-quantized MoE's experts cannot be split `tp` ways (vLLM refuses that without it)."""
    mla = shape.layers and not shape.layers[0].split
    if shape.heads % tp or (not mla and shape.kv_heads % tp and tp % shape.kv_heads):
        return None
    width, block = shape.moe_intermediate, shape.block_n
    if shape.moe and block and width and (width % tp or (width // tp) % block):
        why = (
            f"moe_intermediate_size {width} / tensor parallel {tp} is not a multiple of the checkpoint's "
            f"{block}-wide quantization blocks; vLLM splits the experts only with --enable-expert-parallel"
        )
        return Layout(tp, 1, True, "" if asked_ep else why)
    return Layout(tp, 1, asked_ep and shape.moe)


def _fit(
    shape: ModelShape, weights: Weights, layout: Layout, budget: int, batch: Batch, dtype_bytes: int,
    lora: tuple[int, int],
) -> Fit:  # fmt: skip
    slots, rank = lora
    widest = max(weights.lora_width(stage, layout.pp) for stage in range(layout.pp)) if slots else 0
    reserve = gpu_reserve(shape, layout.tp, batch, slots * rank * widest * ACTIVATION_BYTES)
    per_gpu = [weights.stage(stage, layout.pp) // layout.tp for stage in range(layout.pp)]
    pools = [budget - share - reserve.total for share in per_gpu]
    return Fit(layout, per_gpu, reserve, pools, KvLayout(layout.tp, layout.pp, dtype_bytes, batch.tokens))


def _needs(shape: ModelShape, kv: KvLayout, length: int, target: Target) -> list[int]:
    """The KV each stage's GPUs must hold: one `length` sequence (vLLM's start rule), or the capacity asked for."""
    one = worst_sequence_bytes(shape, kv, length)
    if target.kv_tokens:
        return [max(o, -(-o * target.kv_tokens // length)) for o in one]
    if target.concurrency:
        asked = worst_sequence_bytes(shape, kv, target.tokens_per_request or length)
        return [max(o, target.concurrency * a) for o, a in zip(one, asked, strict=True)]
    return one


def _holds(pools: list[int], needs: list[int]) -> bool:
    return all(pool >= need for pool, need in zip(pools, needs, strict=True))


def _options(shape: ModelShape, smaller: list[Fit], length: int, target: Target) -> tuple[str, ...]:
    """Fewer GPUs: at this context with the larger share of each GPU it takes (up to MAX_UTILIZATION), else at the
    longest context they start with (vLLM's estimate_max_model_len), at this share or at MAX_UTILIZATION."""
    options = []
    for fit in smaller:
        share = _share_needed(shape, fit, length, target)
        if share is not None and share > target.gpu_memory_utilization:
            options.append(f"{_short(fit.layout)} at {length:,} tokens with --gpu-memory-utilization {share:.2f}")
            continue
        more = int((MAX_UTILIZATION - target.gpu_memory_utilization) * target.gpu_memory_gib * GIB)
        for extra, flag in ((0, ""), (more, f"--gpu-memory-utilization {MAX_UTILIZATION} ")):
            pools = [pool + extra for pool in fit.pools]
            longest = longest_context(pools, shape, fit.kv, length) if min(pools) > 0 else 0
            if longest >= min(SHORTEST_OFFER, length):
                options.append(f"{_short(fit.layout)} with {flag}--max-model-len {longest}")
                break
    return tuple(options[-2:])  # the two largest: the nearest to the chosen layout


def _share_needed(shape: ModelShape, fit: Fit, length: int, target: Target) -> float | None:
    """The gpu_memory_utilization at which this layout starts at `length` tokens, if at most MAX_UTILIZATION."""
    one = worst_sequence_bytes(shape, fit.kv, length)
    used = max(w + fit.reserve.total + o for w, o in zip(fit.weights, one, strict=True))
    share = math.ceil(used / (target.gpu_memory_gib * GIB) * 100) / 100
    return share if share <= MAX_UTILIZATION else None


def _short(layout: Layout) -> str:
    return f"{layout.gpus} GPU(s) (tensor parallel {layout.tp}{f' x pipeline {layout.pp}' if layout.pp > 1 else ''})"


def _sizing(
    shape: ModelShape, weights: Weights, fit: Fit, length: int, budget: int, target: Target, options: tuple
) -> Sizing:
    layout, stage = fit.layout, _worst(fit)
    one = worst_sequence_bytes(shape, fit.kv, length)
    full = concurrency(fit.pools, shape, fit.kv, length)
    typical = concurrency(fit.pools, shape, fit.kv, min(TYPICAL_TOKENS, length))
    shm = max(1, 2 * layout.tp) * GIB  # NCCL's buffers between a node's GPUs
    request = RUNTIME_BYTES * (1 + layout.tp) + shm  # the API server and one worker process per GPU
    arithmetic = (
        *_arithmetic(shape, weights, fit, stage, one[stage], length, budget, target),
        f"KV pool {gib_text(fit.pools[stage])} per GPU: {int(full * length):,} tokens, {full:.1f} sequence(s) "
        f"of {length:,} tokens"
        + (f" or {typical:.1f} of {TYPICAL_TOKENS:,}" if length > TYPICAL_TOKENS else "")
        + " at once",
        *(f"or: {option}" for option in options),
        *([f"expert parallel: {layout.why_ep}"] if layout.why_ep else []),
        layout.describe(),
    )
    return Sizing(
        "cuda", weights.total, per_token(shape, fit.kv.dtype_bytes), fit.pools[stage] * layout.gpus,
        target.max_num_seqs, layout.tp, layout.pp, int(target.gpu_memory_gib * GIB), request,
        request + weights.total // layout.pp, 2 + layout.tp, shm, arithmetic, length, int(full * length),
        ((length, round(full, 2)), (min(TYPICAL_TOKENS, length), round(typical, 2))), layout.expert_parallel,
        None, options, shape.notes, fit.weights[stage], fit.pools[stage],
    )  # fmt: skip


def _worst(fit: Fit) -> int:
    """The stage whose GPUs have the least KV left (the one vLLM's pool is sized by)."""
    return min(range(len(fit.pools)), key=lambda s: fit.pools[s])


def _arithmetic(
    shape: ModelShape, weights: Weights, fit: Fit, stage: int, one: int, length: int, budget: int, target: Target
) -> tuple[str, ...]:
    skipped = f" ({gib_text(weights.skipped)} stored past num_hidden_layers are not loaded)" if weights.skipped else ""
    kv_dtype = "" if target.kv_cache_dtype == "auto" else f", --kv-cache-dtype {target.kv_cache_dtype}"
    start = fit.weights[stage] + fit.reserve.total + one
    return (
        f"weights {gib_text(weights.total)} as served{skipped}; {gib_text(fit.weights[stage])} per GPU",
        f"KV {gib_text(per_token(shape, fit.kv.dtype_bytes) * 1024)} per 1k tokens{kv_dtype}; one {length:,}-token "
        f"sequence takes {gib_text(one)} per GPU",
        f"each GPU offers {target.gpu_memory_gib:g} GiB x {target.gpu_memory_utilization:g} = {gib_text(budget)}; "
        f"vLLM's reserve {fit.reserve.describe()}",
        f"start rule: {gib_text(fit.weights[stage])} + {gib_text(fit.reserve.total)} + {gib_text(one)} = "
        f"{gib_text(start)} <= {gib_text(budget)}",
    )


def _refusal(shape: ModelShape, widest: Fit, length: int, budget: int, target: Target) -> UserInputError:
    stage = _worst(widest)
    one = worst_sequence_bytes(shape, widest.kv, length)[stage]
    longest = longest_context(widest.pools, shape, widest.kv, length) if min(widest.pools) > 0 else 0
    shorter = f"--max-model-len {longest}, " if longest else ""
    return UserInputError(
        f"no layout starts this model: even {widest.layout.describe()} needs {gib_text(widest.weights[stage])} of "
        f"weights + {gib_text(widest.reserve.total)} reserved + {gib_text(one)} of KV for one {length:,}-token "
        f"sequence per GPU, above the {gib_text(budget)} each {target.gpu_memory_gib:g} GiB GPU offers; pass "
        f"{shorter}--quantize, --kv-cache-dtype fp8 or a larger --gpu-memory"
    )
