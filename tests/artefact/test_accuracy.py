"""The accuracy report's figures are computed: identical models agree fully, a damaged one moves every figure."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from packager.artefact.accuracy import eval_text, measure_accuracy, perplexity


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from packager.demo import build_demo

    base, _ = build_demo(str(tmp_path_factory.mktemp("acc")))
    return AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)


def test_identical_models_agree_fully(demo) -> None:
    model, tokenizer = demo
    logits = model
    report = measure_accuracy(logits, logits, tokenizer.encode)
    assert report.max_abs_logit_diff == 0 and report.top1_agreement == 1.0
    assert report.greedy_token_agreement == 1.0 and report.greedy_exact_prompts == 1.0
    assert report.perplexity_change == 0.0 and report.perplexity_reference > 1.0


def test_a_damaged_model_moves_the_figures(demo) -> None:
    model, tokenizer = demo
    damaged = AutoModelForCausalLM.from_config(model.config)
    damaged.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, param in damaged.named_parameters():
            if "proj" in name:
                param.add_(torch.randn_like(param) * param.abs().mean() * 2)
    report = measure_accuracy(model, damaged, tokenizer.encode)
    assert report.max_abs_logit_diff > 0.1 and report.mean_abs_logit_diff > 0
    assert report.top1_agreement < 1.0 and report.perplexity_change != 0.0
    assert "perplexity" in report.summary()


def test_perplexity_of_a_perfect_predictor_is_one() -> None:
    ids = torch.tensor([[1, 2, 3, 4]])
    logits = torch.full((1, 4, 8), -1e4)
    for position, target in enumerate([2, 3, 4, 0]):
        logits[0, position, target] = 1e4
    assert perplexity(logits, ids) == pytest.approx(1.0)
    assert len(eval_text()) > 200


def test_cached_greedy_equals_greedy_over_the_whole_sequence(demo) -> None:
    from packager.artefact.accuracy import full_logits, greedy, prompt_batch

    model, tokenizer = demo
    batch = prompt_batch([tokenizer.encode(p) for p in ("The adapter names the base", "hello there", "A report")])
    assert batch.shape[0] == 3
    for row, produced in zip(batch, greedy(model, batch, 10), strict=True):
        tokens = row[None]
        for _ in range(10):  # alone, no cache, the whole sequence each step
            tokens = torch.cat([tokens, full_logits(model, tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert produced == tokens[0, batch.shape[1] :].tolist()
