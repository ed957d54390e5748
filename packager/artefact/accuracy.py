"""Accuracy of a transformed model (quantized, exported) against the model it came from, in numbers people read:
logits distance, top-1 agreement, greedy-continuation agreement and perplexity on a text the project ships.

Both models are called the Hugging Face way (`model(input_ids=, attention_mask=, past_key_values=, use_cache=)`
returning `.logits` and `.past_key_values`), so a transformers model, an optimum-quanto one and an ONNX Runtime
`ORTModelForCausalLM` are measured by the same code. Greedy continuations use the KV cache, as serving does.
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
# Sized so that measuring costs about what an exporter's own validation does (bench/RESULTS.md): the first 128
# tokens of the shipped text (~two thirds of it with a 32k-vocabulary tokenizer) and 8 greedy tokens per prompt.
MAX_TEXT_TOKENS = 128
NEW_TOKENS = 8
DEFAULT_PROMPTS = (
    "The adapter names the base",
    "A good report says",
    "If the wrong base is mounted",
    "Shipping a fine-tuned model",
)


@dataclass(frozen=True)
class AccuracyReport:
    """How closely a transformed model follows the model it came from."""

    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float  # share of positions where both models rank the same token first
    greedy_token_agreement: float  # share of generated tokens that match, position by position
    greedy_exact_prompts: float  # share of prompts whose whole greedy continuation matches
    perplexity_reference: float
    perplexity_candidate: float

    @property
    def perplexity_change(self) -> float:
        """The candidate's relative perplexity change (0.01 = 1% higher than the reference)."""
        return self.perplexity_candidate / self.perplexity_reference - 1.0

    def to_dict(self) -> dict[str, float]:
        """The figures as a dict, perplexity_change included."""
        return {**dataclasses.asdict(self), "perplexity_change": self.perplexity_change}

    def summary(self) -> str:
        """The figures on one line for people."""
        return (
            f"logits max |diff| {self.max_abs_logit_diff:.3g} (mean {self.mean_abs_logit_diff:.3g}), top-1 "
            f"{self.top1_agreement:.1%}, greedy tokens {self.greedy_token_agreement:.1%}, perplexity "
            f"{self.perplexity_reference:.3f} -> {self.perplexity_candidate:.3f} ({self.perplexity_change:+.2%})"
        )


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
    """The candidate's figures against a recorded reference run."""
    with torch.no_grad():
        cand_logits = full_logits(candidate, run.text_ids)
    diff = (run.logits - cand_logits).abs()
    top1 = (run.logits.argmax(-1) == cand_logits.argmax(-1)).float().mean().item()
    matches, exact = [], 0
    for expected, produced in zip(run.continuations, greedy(candidate, run.prompts, run.new_tokens), strict=True):
        matches += [a == b for a, b in zip(expected, produced, strict=True)]
        exact += expected == tuple(produced)
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
    reference: CausalLM,
    candidate: CausalLM,
    encode: Callable[[str], list[int]],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    new_tokens: int = NEW_TOKENS,
    text: str | None = None,
) -> AccuracyReport:
    """Compare `candidate` with `reference` on the shipped text and the prompts."""
    return compare(record_reference(reference, encode, prompts, new_tokens, text), candidate)


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
