"""Accuracy of a transformed model (quantized, exported) against the model it came from, in numbers people read:
logits distance, top-1 agreement, greedy-continuation agreement and perplexity on a text the project ships.

Both models are plain callables from token ids to logits, so a PyTorch model and an ONNX Runtime session are
measured the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import torch

Logits = Callable[[torch.Tensor], torch.Tensor]  # (1, n) token ids -> (1, n, vocab) logits
DEFAULT_PROMPTS = (
    "The adapter names the base",
    "A good report says",
    "If the wrong base is mounted",
    "Shipping a fine-tuned model",
)


@dataclass(frozen=True)
class AccuracyReport:
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float  # share of positions where both models rank the same token first
    greedy_token_agreement: float  # share of generated tokens that match, position by position
    greedy_exact_prompts: float  # share of prompts whose whole greedy continuation matches
    perplexity_reference: float
    perplexity_candidate: float

    @property
    def perplexity_change(self) -> float:
        return self.perplexity_candidate / self.perplexity_reference - 1.0

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "perplexity_change": self.perplexity_change}

    def summary(self) -> str:
        return (
            f"logits max |diff| {self.max_abs_logit_diff:.3g} (mean {self.mean_abs_logit_diff:.3g}), top-1 "
            f"{self.top1_agreement:.1%}, greedy tokens {self.greedy_token_agreement:.1%}, perplexity "
            f"{self.perplexity_reference:.3f} -> {self.perplexity_candidate:.3f} ({self.perplexity_change:+.2%})"
        )


def eval_text() -> str:
    return resources.files("packager.data").joinpath("eval_text.txt").read_text()


@dataclass(frozen=True)
class ReferenceRun:
    """What the reference model produced once, so several candidates are compared without keeping it loaded."""

    text_ids: torch.Tensor = field(repr=False)
    logits: torch.Tensor = field(repr=False)  # (1, n, vocab) fp32 on the shipped text
    prompts: tuple[torch.Tensor, ...] = field(repr=False)
    continuations: tuple[tuple[int, ...], ...]
    new_tokens: int


def record_reference(
    reference: Logits,
    encode: Callable[[str], list[int]],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    new_tokens: int = 12,
    text: str | None = None,
) -> ReferenceRun:
    """Run the reference on the shipped text and the prompts."""
    ids = torch.tensor([encode(text or eval_text())])
    prompt_ids = tuple(torch.tensor([encode(prompt)]) for prompt in prompts)
    with torch.no_grad():
        logits = reference(ids).float()
    continuations = tuple(tuple(greedy(reference, p, new_tokens)) for p in prompt_ids)
    return ReferenceRun(ids, logits, prompt_ids, continuations, new_tokens)


def compare(run: ReferenceRun, candidate: Logits) -> AccuracyReport:
    """The candidate's figures against a recorded reference run."""
    with torch.no_grad():
        cand_logits = candidate(run.text_ids).float()
    diff = (run.logits - cand_logits).abs()
    top1 = (run.logits.argmax(-1) == cand_logits.argmax(-1)).float().mean().item()
    matches, exact = [], 0
    for prompt, expected in zip(run.prompts, run.continuations, strict=True):
        produced = tuple(greedy(candidate, prompt, run.new_tokens))
        matches += [a == b for a, b in zip(expected, produced, strict=True)]
        exact += expected == produced
    return AccuracyReport(
        max_abs_logit_diff=diff.max().item(),
        mean_abs_logit_diff=diff.mean().item(),
        top1_agreement=top1,
        greedy_token_agreement=sum(matches) / len(matches),
        greedy_exact_prompts=exact / len(run.prompts),
        perplexity_reference=perplexity(run.logits, run.text_ids),
        perplexity_candidate=perplexity(cand_logits, run.text_ids),
    )


def measure_accuracy(
    reference: Logits,
    candidate: Logits,
    encode: Callable[[str], list[int]],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    new_tokens: int = 12,
    text: str | None = None,
) -> AccuracyReport:
    """Compare `candidate` with `reference` on the shipped text and the prompts."""
    return compare(record_reference(reference, encode, prompts, new_tokens, text), candidate)


def greedy(model: Logits, ids: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy continuation without a cache (prompts here are short): the plainest reference behaviour."""
    tokens = ids
    with torch.no_grad():
        for _ in range(new_tokens):
            next_token = model(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[0, ids.shape[1] :].tolist()


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy over the text."""
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return math.exp(loss.item())


def causal_lm_logits(model) -> Logits:
    """Wrap a transformers causal LM as a Logits callable."""
    model.eval()
    return lambda ids: model(input_ids=ids).logits
