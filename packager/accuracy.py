"""Accuracy of a transformed model (quantized, exported) against the model it came from, in numbers people read:
logits distance, top-1 agreement, greedy-continuation agreement and perplexity on a text the project ships.

Both models are plain callables from token ids to logits, so a PyTorch model and an ONNX Runtime session are
measured the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

    def summary(self) -> str:
        return (
            f"logits max |diff| {self.max_abs_logit_diff:.3g} (mean {self.mean_abs_logit_diff:.3g}), top-1 "
            f"{self.top1_agreement:.1%}, greedy tokens {self.greedy_token_agreement:.1%}, perplexity "
            f"{self.perplexity_reference:.3f} -> {self.perplexity_candidate:.3f} ({self.perplexity_change:+.2%})"
        )


def eval_text() -> str:
    return resources.files("packager.data").joinpath("eval_text.txt").read_text()


def measure_accuracy(
    reference: Logits,
    candidate: Logits,
    encode: Callable[[str], list[int]],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    new_tokens: int = 12,
    text: str | None = None,
) -> AccuracyReport:
    """Compare `candidate` with `reference` on the shipped text and the prompts."""
    ids = torch.tensor([encode(text or eval_text())])
    with torch.inference_mode():
        ref_logits, cand_logits = reference(ids).float(), candidate(ids).float()
    diff = (ref_logits - cand_logits).abs()
    top1 = (ref_logits.argmax(-1) == cand_logits.argmax(-1)).float().mean().item()
    matches, exact = [], 0
    for prompt in prompts:
        prompt_ids = torch.tensor([encode(prompt)])
        ref_tokens, cand_tokens = greedy(reference, prompt_ids, new_tokens), greedy(candidate, prompt_ids, new_tokens)
        matches += [a == b for a, b in zip(ref_tokens, cand_tokens, strict=True)]
        exact += ref_tokens == cand_tokens
    return AccuracyReport(
        max_abs_logit_diff=diff.max().item(),
        mean_abs_logit_diff=diff.mean().item(),
        top1_agreement=top1,
        greedy_token_agreement=sum(matches) / len(matches),
        greedy_exact_prompts=exact / len(prompts),
        perplexity_reference=perplexity(ref_logits, ids),
        perplexity_candidate=perplexity(cand_logits, ids),
    )


def greedy(model: Logits, ids: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy continuation without a cache (prompts here are short): the plainest reference behaviour."""
    tokens = ids
    with torch.inference_mode():
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
