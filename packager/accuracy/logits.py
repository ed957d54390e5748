"""Accuracy of a transformed model (quantized, exported) against the model it came from, in numbers people read:
perplexity on a text the project ships, top-1 agreement and KL divergence of the next-token distributions,
logits distance, and greedy-continuation agreement where the whole model runs at once.

Every artefact's figures come from `compare_logits`, whatever produced the logits: a compressed-tensors checkpoint
run module by module (quantize/measure.py), or an ONNX Runtime `ORTModelForCausalLM` called the Hugging Face way
(`model(input_ids=, attention_mask=, past_key_values=, use_cache=)`), whose greedy continuations use the KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

CausalLM = Any  # transformers-style: model(input_ids=..., attention_mask=..., ...) -> output with .logits
# The shipped text (~170 tokens with a 32k-vocabulary tokenizer) and, where the whole model runs, 8 greedy tokens
# per prompt; a larger vocabulary's logits are compared a chunk of positions at a time.
MAX_TEXT_TOKENS = 256
POSITIONS_PER_CHUNK = 32
CONFIDENT = 0.5  # a position whose reference puts at least this on its top token: a choice a reader would see
NEW_TOKENS = 8
DEFAULT_PROMPTS = (
    "The adapter names the base",
    "A good report says",
    "If the wrong base is mounted",
    "Shipping a fine-tuned model",
)


@dataclass(frozen=True)
class AccuracyReport:
    """How closely a transformed model follows the model it came from, on the shipped text (and, where the whole
    model runs at once, on greedy continuations of a few prompts)."""

    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float  # share of positions where both models rank the same token first
    kl_divergence: float  # mean KL(reference || candidate) of the next-token distributions, in nats
    perplexity_reference: float
    perplexity_candidate: float
    greedy_token_agreement: float | None = None  # share of generated tokens that match, position by position
    greedy_exact_prompts: float | None = None  # share of prompts whose whole greedy continuation matches
    tokens: int = 0  # how many tokens of the shipped text were measured
    confident_top1: float | None = None  # top-1 agreement where the reference is confident (None: no such position)
    confident_positions: int = 0

    @property
    def perplexity_change(self) -> float:
        """The candidate's relative perplexity change (0.01 = 1% higher than the reference)."""
        return self.perplexity_candidate / self.perplexity_reference - 1.0

    def to_dict(self) -> dict[str, float | None]:
        """The figures as a dict, perplexity_change included."""
        return {**dataclasses.asdict(self), "perplexity_change": self.perplexity_change}

    def figures(self) -> dict[str, float]:
        """The compact figures of the image label."""
        figures = {
            "max_abs_logit_diff": float(f"{self.max_abs_logit_diff:.4g}"),
            "mean_abs_logit_diff": float(f"{self.mean_abs_logit_diff:.4g}"),
            "top1": round(self.top1_agreement, 4),
            "kl": float(f"{self.kl_divergence:.4g}"),
            "ppl_change": round(self.perplexity_change, 5),
        }
        if self.greedy_token_agreement is not None:
            figures["greedy"] = round(self.greedy_token_agreement, 4)
        return figures

    def summary(self) -> str:
        """The figures on one line for people."""
        greedy = "" if self.greedy_token_agreement is None else f", greedy tokens {self.greedy_token_agreement:.1%}"
        return (
            f"perplexity {self.perplexity_reference:.3f} -> {self.perplexity_candidate:.3f} "
            f"({self.perplexity_change:+.2%}), top-1 {self.top1_agreement:.1%}, KL {self.kl_divergence:.3g}, "
            f"logits max |diff| {self.max_abs_logit_diff:.3g} (mean {self.mean_abs_logit_diff:.3g}){greedy}"
        )


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor, ids: torch.Tensor) -> AccuracyReport:
    """The figures of two models' (1, n, vocab) logits on the same token ids: every artefact is measured here.
    Positions are taken a chunk at a time, so the softmaxes cost a few chunks, not the whole sequence again."""
    totals = dict.fromkeys(("max", "abs", "top1", "kl", "nll_p", "nll_q", "sure", "sure_kept"), 0.0)
    positions = reference.shape[1]
    for start in range(0, positions, POSITIONS_PER_CHUNK):
        p = reference[0, start : start + POSITIONS_PER_CHUNK].float()
        q = candidate[0, start : start + POSITIONS_PER_CHUNK].float()
        diff = (p - q).abs()
        totals["max"] = max(totals["max"], diff.max().item())
        totals["abs"] += diff.sum().item()
        totals["top1"] += (p.argmax(-1) == q.argmax(-1)).sum().item()
        log_p, log_q = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
        totals["kl"] += (log_p.exp() * (log_p - log_q)).sum().item()
        sure = log_p.max(-1).values.exp() >= CONFIDENT
        totals["sure"] += sure.sum().item()
        totals["sure_kept"] += (sure & (p.argmax(-1) == q.argmax(-1))).sum().item()
        targets = ids[0, start + 1 : start + 1 + len(p)]
        totals["nll_p"] -= log_p[: len(targets)].gather(-1, targets[:, None]).sum().item()
        totals["nll_q"] -= log_q[: len(targets)].gather(-1, targets[:, None]).sum().item()
    predicted = positions - 1
    return AccuracyReport(
        max_abs_logit_diff=totals["max"],
        mean_abs_logit_diff=totals["abs"] / reference[0].numel(),
        top1_agreement=totals["top1"] / positions,
        kl_divergence=max(totals["kl"] / positions, 0.0),
        perplexity_reference=math.exp(totals["nll_p"] / predicted),
        perplexity_candidate=math.exp(totals["nll_q"] / predicted),
        tokens=positions,
        confident_top1=totals["sure_kept"] / totals["sure"] if totals["sure"] else None,
        confident_positions=int(totals["sure"]),
    )


@dataclass(frozen=True)
class EncoderAccuracy:
    """How closely an embedding model or classifier follows the merge it came from, on texts of the shipped text:
    the cosine of the embeddings as served (pooled), or the share of labels unchanged (per token for TOKEN_CLS)."""

    items: int  # texts (embeddings, SEQ_CLS) or tokens (TOKEN_CLS) compared
    max_abs_diff: float  # of the embeddings, or of the class probabilities
    cosine_mean: float | None = None
    cosine_min: float | None = None
    label_agreement: float | None = None

    @property
    def loss(self) -> float:
        """What --max-accuracy-loss bounds: 1 - the lowest cosine, or the share of labels that changed."""
        return 1 - (self.cosine_min if self.cosine_min is not None else self.label_agreement or 0.0)

    def to_dict(self) -> dict[str, float | None]:
        """The figures as a dict."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """The figures on one line for people."""
        if self.cosine_min is not None:
            what = f"embeddings cosine {self.cosine_mean:.4f} mean / {self.cosine_min:.4f} min"
        else:
            what = f"labels unchanged {self.label_agreement:.1%}"
        return f"{what} over {self.items} items, max |diff| {self.max_abs_diff:.3g}"

    def figures(self) -> dict[str, float]:
        """The compact figures of the image label."""
        keys = ("cosine_mean", "cosine_min", "label_agreement", "max_abs_diff")
        return {k: float(f"{getattr(self, k):.4g}") for k in keys if getattr(self, k) is not None}


def eval_text() -> str:
    """The text accuracy is measured on (packager/data/eval_text.txt)."""
    return resources.files("packager.data").joinpath("eval_text.txt").read_text()


@dataclass(frozen=True)
class ReferenceRun:
    """What the reference model produced once, so several candidates are compared without keeping it loaded."""

    text_ids: torch.Tensor = field(repr=False)
    logits: torch.Tensor = field(repr=False)  # (1, n, vocab) fp32 on the shipped text
    prompts: torch.Tensor = field(repr=False)  # (prompts, n): every prompt cut to the shortest one's length
    continuations: tuple[tuple[int, ...], ...]
    new_tokens: int


def record_reference(
    reference: CausalLM,
    encode: Callable[[str], list[int]],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    new_tokens: int = NEW_TOKENS,
    text: str | None = None,
) -> ReferenceRun:
    """Run the reference on the shipped text and the prompts."""
    ids = torch.tensor([encode(text or eval_text())[:MAX_TEXT_TOKENS]])
    prompt_ids = prompt_batch([encode(prompt) for prompt in prompts])
    with torch.no_grad():
        logits = full_logits(reference, ids)
    continuations = tuple(tuple(row) for row in greedy(reference, prompt_ids, new_tokens))
    return ReferenceRun(ids, logits, prompt_ids, continuations, new_tokens)


def prompt_batch(encoded: list[list[int]]) -> torch.Tensor:
    """All prompts in one batch without padding (each cut to the shortest), so every row is generated exactly as
    alone, and a step reads the weights once for all prompts (decoding is memory-bound)."""
    length = min(len(ids) for ids in encoded)
    return torch.tensor([ids[:length] for ids in encoded])


def compare(run: ReferenceRun, candidate: CausalLM) -> AccuracyReport:
    """The candidate's figures against a recorded reference run (the text, and greedy continuations)."""
    with torch.no_grad():
        report = compare_logits(run.logits, full_logits(candidate, run.text_ids), run.text_ids)
    matches, exact = [], 0
    for expected, produced in zip(run.continuations, greedy(candidate, run.prompts, run.new_tokens), strict=True):
        matches += [a == b for a, b in zip(expected, produced, strict=True)]
        exact += expected == tuple(produced)
    return dataclasses.replace(
        report, greedy_token_agreement=sum(matches) / len(matches), greedy_exact_prompts=exact / len(run.prompts)
    )


def full_logits(model: CausalLM, ids: torch.Tensor) -> torch.Tensor:
    """(1, n, vocab) fp32 logits of the whole sequence."""
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


def greedy(model: CausalLM, ids: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Exactly `new_tokens` greedy tokens per row of `ids` (EOS does not stop it), through the KV cache."""
    steps: list[torch.Tensor] = []
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        while True:
            next_token = out.logits[:, -1].argmax(-1, keepdim=True)
            steps.append(next_token)
            if len(steps) == new_tokens:
                return torch.cat(steps, dim=1).tolist()
            mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
            out = model(input_ids=next_token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy over the text."""
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return math.exp(loss.item())
