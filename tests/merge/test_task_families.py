"""Encoders, encoder-decoders and classifiers merge with PEFT parity in the task's own class, or are refused:
never a merged model that answers unlike PEFT (issue 11)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from peft import AdaLoraConfig, LoraConfig
from safetensors import safe_open

from packager.errors import IncompatibleAdapterError
from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from tests import families

# name: (family, how the base is saved, task, PEFT config, labels)
CASES = {
    "bert-seq-cls": ("bert", "BertForPreTraining", "SEQ_CLS", lambda: LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]), 3),
    "bert-bare-seq-cls": ("bert", "BertModel", "SEQ_CLS", lambda: LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value", "dense"]), 2),
    "xlmr-dora-seq-cls": ("xlm-roberta", "XLMRobertaForMaskedLM", "SEQ_CLS", lambda: LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], use_dora=True), 3),
    "bert-adalora-seq-cls": ("bert", "BertForPreTraining", "SEQ_CLS", lambda: AdaLoraConfig(
        task_type="SEQ_CLS", init_r=6, target_r=4, target_modules=["query", "value"], total_step=10), 2),
    "qwen2-seq-cls": ("qwen2", "Qwen2ForCausalLM", "SEQ_CLS", lambda: LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), 4),
    # DeBERTa's pooler belongs to its head, not to the base: saved only when named in modules_to_save
    "deberta-seq-cls": ("deberta-v2", "DebertaV2Model", "SEQ_CLS", lambda: LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query_proj", "value_proj"],
        modules_to_save=["pooler"]), 2),
    "bert-token-cls": ("bert", "BertForPreTraining", "TOKEN_CLS", lambda: LoraConfig(
        task_type="TOKEN_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]), 5),
    "bert-qa": ("bert", "BertForPreTraining", "QUESTION_ANS", lambda: LoraConfig(
        task_type="QUESTION_ANS", r=4, lora_alpha=8, target_modules=["query", "value"]), None),
    "bert-embeddings": ("bert", "BertForPreTraining", "FEATURE_EXTRACTION", lambda: LoraConfig(
        task_type="FEATURE_EXTRACTION", r=4, lora_alpha=8, target_modules=["query", "value"]), None),
    "t5-seq2seq": ("t5", "T5ForConditionalGeneration", "SEQ_2_SEQ_LM", lambda: LoraConfig(
        task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, target_modules=["q", "v"]), None),
    "bart-seq2seq": ("bart", "BartForConditionalGeneration", "SEQ_2_SEQ_LM", lambda: LoraConfig(
        task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), None),
}  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """case -> (base folder, adapter folder), each made once."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, (family, saved_as, task, config, labels) in CASES.items():
        base = families.save_base(family, saved_as, str(root / f"{name}-base"))
        adapter = families.save_task_adapter(base, str(root / f"{name}-adapter"), task, config(), labels)
        out[name] = (base, adapter)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_merges_like_peft_in_the_tasks_class(name, made, tmp_path) -> None:
    _family, _saved_as, task, _config, labels = CASES[name]
    base, adapter = made[name]
    outcome = run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    assert outcome.parity is not None and outcome.parity.passed, outcome.parity
    assert outcome.resolved.plan.task.name == task
    inputs = families.inputs_for(task)
    expected = families.peft_answers(base, adapter, task, inputs, labels)
    merged = families.load_in_task_class(str(tmp_path / "merged"), task)
    with torch.inference_mode():
        answer = families.first_output(merged.eval()(**inputs))
    torch.testing.assert_close(answer, expected["unmerged"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(answer, expected["merged"], atol=1e-5, rtol=1e-4)


def test_merged_files_keep_the_bases_key_layout(made, tmp_path) -> None:
    base, adapter = made["bert-embeddings"]  # keys under bert., loaded as a bare BertModel
    run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    with safe_open(os.path.join(tmp_path, "merged", "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all(k.startswith("bert.") for k in keys)  # MLM/NSP heads (cls.*) left out: BertModel lacks them


def test_a_classifier_config_names_its_class_and_labels(made, tmp_path) -> None:
    base, adapter = made["qwen2-seq-cls"]
    run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and len(config["id2label"]) == 4


def test_a_head_nobody_saved_is_refused(made, tmp_path) -> None:
    base, adapter = made["bert-seq-cls"]
    planted = tmp_path / "headless"
    planted.mkdir()
    from safetensors.torch import load_file, save_file

    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "classifier" not in k}, str(planted / "adapter_model.safetensors"))
    shutil.copy(os.path.join(adapter, "adapter_config.json"), planted / "adapter_config.json")
    with pytest.raises(IncompatibleAdapterError, match=r"needs classifier\.bias, classifier\.weight.*at random"):
        run_merge(ResolveRequest(str(planted), base=base), str(tmp_path / "merged"), quiet=True)
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("family", "saved_as", "targets", "pooler"),
    [
        ("bert", "BertForMaskedLM", ["query", "value"], "bert.pooler.dense"),  # an MLM checkpoint has no pooler
        ("deberta-v2", "DebertaV2Model", ["query_proj", "value_proj"], "pooler.dense"),  # not saved by default
    ],
)
def test_a_pooler_left_to_random_init_is_refused(family, saved_as, targets, pooler, tmp_path) -> None:
    """PEFT itself would give such a model a new random pooler at every load: no merge can match it."""
    base = families.save_base(family, saved_as, str(tmp_path / "base"))
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=targets)
    adapter = families.save_task_adapter(base, str(tmp_path / "adapter"), "SEQ_CLS", config, 2)
    with pytest.raises(IncompatibleAdapterError, match=rf"needs .*{pooler}.*modules_to_save"):
        run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    assert not (tmp_path / "merged").exists()
