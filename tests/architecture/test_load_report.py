"""The header-based load check gives transformers' own loading report (missing, unexpected, mis-shaped) on every
family and checkpoint layout packager handles, and on planted faults, without reading a weight (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from packager.architecture.inspect import inspect_meta_architecture
from packager.architecture.load_report import LoadReport, folder_report
from packager.errors import CorruptFileError, ParityError
from packager.merge.verify import check_loads_cleanly
from packager.tasks import TASKS, ModelTask
from tests import families, models


def task(name: str) -> ModelTask:
    return ModelTask(name, TASKS[name][0])


def transformers_report(path: str, model_task: ModelTask) -> LoadReport:
    """The oracle: what from_pretrained itself reports (it reads every weight to say so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = model_task.model_class().from_pretrained(
            path, device_map="meta", output_loading_info=True, ignore_mismatched_sizes=True
        )
    return LoadReport(
        tuple(info["missing_keys"]), tuple(info["unexpected_keys"]), tuple(sorted(info["mismatched_keys"]))
    )


def comparable(report: LoadReport) -> tuple:
    return sorted(report.missing), sorted(report.unexpected), sorted(name for name, *_ in report.mismatched)


def oracle(report: LoadReport) -> tuple:
    return sorted(report.missing), sorted(report.unexpected), sorted(report.mismatched)


SAVED = {
    # name: (how it is saved, the task it is loaded as)
    "bert-pretraining-as-embeddings": (
        lambda p: families.save_base("bert", "BertForPreTraining", p),
        "FEATURE_EXTRACTION",
    ),
    "bert-pretraining-as-classifier": (lambda p: families.save_base("bert", "BertForPreTraining", p), "SEQ_CLS"),
    "bare-bert-as-classifier": (lambda p: families.save_base("bert", "BertModel", p), "SEQ_CLS"),
    "bare-bert-as-tokens": (lambda p: families.save_base("bert", "BertModel", p), "TOKEN_CLS"),
    "bert-qa": (lambda p: families.save_base("bert", "BertForQuestionAnswering", p), "QUESTION_ANS"),
    "deberta-mlm-as-classifier": (lambda p: families.save_base("deberta-v2", "DebertaV2ForMaskedLM", p), "SEQ_CLS"),
    "xlmr-as-embeddings": (
        lambda p: families.save_base("xlm-roberta", "XLMRobertaForMaskedLM", p),
        "FEATURE_EXTRACTION",
    ),
    "t5": (lambda p: families.save_base("t5", "T5ForConditionalGeneration", p), "SEQ_2_SEQ_LM"),
    "bart": (lambda p: families.save_base("bart", "BartForConditionalGeneration", p), "SEQ_2_SEQ_LM"),
    "qwen2-as-classifier": (lambda p: families.save_base("qwen2", "Qwen2ForCausalLM", p), "SEQ_CLS"),
    "llama": (lambda p: models.save_base(models.llama_config(), p), "CAUSAL_LM"),
    "llama-tied": (lambda p: models.save_base(models.llama_config(tie_word_embeddings=True), p), "CAUSAL_LM"),
    "gpt2": (lambda p: models.save_base(models.gpt2_config(), p), "CAUSAL_LM"),
    "qwen2-sharded": (lambda p: models.save_base(models.qwen2_config(), p, max_shard_size="60KB"), "CAUSAL_LM"),
    "llava": (families.save_llava, "IMAGE_TEXT_TO_TEXT"),
    "idefics2": (families.save_idefics2, "IMAGE_TEXT_TO_TEXT"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("load-check")
    return {name: save(str(root / name)) for name, (save, _task) in SAVED.items()}


@pytest.mark.parametrize("name", sorted(SAVED))
def test_the_report_is_transformers_own(saved, name) -> None:
    model_task = task(SAVED[name][1])
    ours = folder_report(saved[name], model_task)
    assert comparable(ours) == oracle(transformers_report(saved[name], model_task))


def test_the_families_cover_every_kind_of_report(saved) -> None:
    """The matrix above is not all-clean: prefixes stripped and added, heads missing, other heads unexpected."""
    reports = {name: folder_report(saved[name], task(t)) for name, (_s, t) in SAVED.items()}
    assert reports["llama"].clean and reports["gpt2"].clean and reports["llava"].clean
    assert "classifier.weight" in reports["bare-bert-as-classifier"].missing  # the bert. prefix added
    assert any(k.startswith("cls.") for k in reports["bert-pretraining-as-embeddings"].unexpected)  # stripped
    assert "score.weight" in reports["qwen2-as-classifier"].missing
    assert "lm_head.weight" in reports["qwen2-as-classifier"].unexpected


def rewrite(folder: str, change) -> None:
    """Apply `change` to the folder's (single-file) state dict and save it back."""
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def planted(saved, tmp_path, change) -> str:
    folder = str(tmp_path / "planted")
    shutil.copytree(saved["llama"], folder)
    rewrite(folder, change)
    return folder


FAULTS = {
    "missing": lambda s: s.pop("model.layers.1.mlp.down_proj.weight"),
    "unexpected": lambda s: s.update({"model.layers.1.extra.weight": torch.zeros(3)}),
    "mis-shaped": lambda s: s.update({"model.norm.weight": torch.zeros(65)}),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_faults_are_reported_as_transformers_reports_them(saved, tmp_path, fault) -> None:
    folder = planted(saved, tmp_path, FAULTS[fault])
    ours = folder_report(folder, task("CAUSAL_LM"))
    assert not ours.clean
    assert comparable(ours) == oracle(transformers_report(folder, task("CAUSAL_LM")))
    with pytest.raises(ParityError, match=rf"does not load cleanly as AutoModelForCausalLM \({fault}: "):
        check_loads_cleanly(folder, task("CAUSAL_LM"))


def test_a_mis_shaped_base_is_refused_at_plan_time(saved, tmp_path) -> None:
    folder = planted(saved, tmp_path, FAULTS["mis-shaped"])
    with pytest.raises(CorruptFileError, match=r"stores model\.norm\.weight with shape \[65\].*restore the base"):
        inspect_meta_architecture(folder, task("SEQ_CLS"))


def test_the_check_reads_headers_only(saved, tmp_path) -> None:
    """Zeroing every weight's bytes (headers kept) changes nothing: the check never looks at them."""
    folder = str(tmp_path / "hollow")
    shutil.copytree(saved["qwen2-sharded"], folder)
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            path = os.path.join(folder, name)
            with open(path, "r+b") as f:
                header = 8 + int.from_bytes(f.read(8), "little")
                f.seek(header)
                f.write(b"\xff" * (os.path.getsize(path) - header))  # NaNs everywhere: a read would notice
    assert folder_report(folder, task("CAUSAL_LM")).clean
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["model_type"] == "qwen2"
