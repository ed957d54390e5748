"""The model class of a job: --task, the adapter's task_type, the base's architecture; and what packaging does with
each task (issue 11)."""

from __future__ import annotations

import json

import pytest
from peft import LoraConfig

from packager.errors import UserInputError
from packager.tasks import ModelTask, base_task, choose_task
from tests import families

BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert"}
IDEFICS2 = {"architectures": ["Idefics2ForConditionalGeneration"], "vision_config": {}}
T5 = {"architectures": ["T5ForConditionalGeneration"]}


@pytest.mark.parametrize(
    ("override", "adapter", "base", "task"),
    [
        ("seq_cls", {"task_type": "CAUSAL_LM"}, BERT, "SEQ_CLS"),  # --task wins
        (None, {"task_type": "FEATURE_EXTRACTION"}, BERT, "FEATURE_EXTRACTION"),
        (None, {"task_type": "CAUSAL_LM"}, IDEFICS2, "IMAGE_TEXT_TO_TEXT"),  # CAUSAL_LM on a VLM: its own class
        (None, {"task_type": "CAUSAL_LM"}, T5, "SEQ_2_SEQ_LM"),
        (None, {}, T5, "SEQ_2_SEQ_LM"),  # no task_type: the base's architecture
        (None, {}, {"architectures": ["Qwen2ForSequenceClassification"]}, "SEQ_CLS"),
        (None, {}, {"architectures": ["BertModel"]}, "FEATURE_EXTRACTION"),
        (None, {}, {}, "CAUSAL_LM"),  # nothing says: a causal LM, and the reason says how to choose
    ],
)
def test_the_task_follows_flag_then_adapter_then_base(override, adapter, base, task) -> None:
    chosen = choose_task(override, adapter, base)
    assert chosen.name == task and chosen.reason
    assert chosen.model_class().__name__ == chosen.auto_class


def test_an_unknown_task_is_refused_with_the_choices() -> None:
    with pytest.raises(UserInputError, match=r"task_type 'SEQ_GAN'.*pass --task with one of CAUSAL_LM"):
        choose_task(None, {"task_type": "SEQ_GAN"}, BERT)
    with pytest.raises(UserInputError, match=r"unknown --task"):
        choose_task("chat", {}, BERT)
    assert base_task({"architectures": ["Whisper"]}) is None and ModelTask().generates


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("cls")
    base = families.save_word_tokenizer(families.save_base("bert", "BertForPreTraining", str(root / "base")))
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    return base, families.save_task_adapter(base, str(root / "adapter"), "SEQ_CLS", config, 3)


def _package(base: str, adapter: str, *flags: str) -> list[str]:
    return ["package", "--adapter", f"cls={adapter}", "--base", base, "--dry-run", "--json", *flags]


def test_a_classifier_plan_serves_with_packagers_server_in_its_class(classifier, capsys) -> None:
    from packager.cli.main import main

    flags = ("--layout", "baked", "--base-image", "packager-runtime:x", "--runtime", "packager")
    assert main(_package(*classifier, *flags)) == 0
    plan = json.loads(capsys.readouterr().out)
    runtime = plan["image"]["runtime"]
    assert runtime["task"] == "SEQ_CLS" and runtime["model_class"] == "AutoModelForSequenceClassification"
    assert runtime.get("engine", "packager") == "packager"  # runtime.json names an engine only when it is vLLM
    assert plan["image"]["engine_reason"] == "asked for with --runtime packager"
    assert plan["task"]["name"] == "SEQ_CLS" and "task_type" in plan["task"]["reason"]


def test_a_classifier_plan_goes_to_vllms_pooling_runner_with_runtime_vllm(classifier, capsys) -> None:
    from packager.cli.main import main

    assert main(_package(*classifier, "--layout", "baked", "--runtime", "vllm")) == 0
    image = json.loads(capsys.readouterr().out)["image"]
    assert image["runtime"]["engine"] == "vllm" and image["runtime"]["vllm"]["pooling"] == {"task": "classify"}
    assert image["engine_reason"] == "BertForSequenceClassification through vLLM's pooling runner (batched requests)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layout", "shared"], "use --layout baked"),
        (["--layout", "baked", "--quantize", "w8a8"], "applies to causal LMs"),
        (["--layout", "baked", "--runtime", "vllm", "--export", "onnx"], "--runtime vllm cannot serve this model"),
    ],
)
def test_what_the_images_do_not_serve_is_refused_at_plan_time(classifier, capsys, flags, message) -> None:
    from packager.cli.main import main

    assert main(_package(*classifier, "--base-image", "packager-runtime:x", *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_task_the_images_do_not_serve_is_refused_with_the_merge_hint(classifier, tmp_path, capsys) -> None:
    from packager.cli.main import main

    config = LoraConfig(task_type="QUESTION_ANS", r=4, lora_alpha=8, target_modules=["query", "value"])
    adapter = families.save_task_adapter(classifier[0], str(tmp_path / "qa"), "QUESTION_ANS", config)
    assert main(_package(classifier[0], adapter, "--layout", "baked", "--base-image", "packager-runtime:x")) == 2
    assert "packager merges QUESTION_ANS adapters" in capsys.readouterr().err


def test_every_served_task_round_trips_through_runtime_json() -> None:
    """The plan's table and the runtime's agree: each task an image serves is written and read back."""
    from packager.runtime.config import SERVED_TASKS, RuntimeConfig, parse_config
    from packager.tasks import TASKS

    for task in SERVED_TASKS:
        config = RuntimeConfig("baked", model_dir="/m", served_name="x", task=task, model_class=TASKS[task][0])
        assert parse_config(config.to_json(), "/", env={}) == config


def test_quantize_and_export_refuse_a_model_that_is_not_a_causal_lm(classifier, tmp_path, capsys) -> None:
    from packager.cli.main import main

    args = ["merge", "--adapter", classifier[1], "--base", classifier[0], "--output", str(tmp_path / "m")]
    assert main([*args, "--quantize", "w8a8"]) == 2
    assert "causal LMs" in capsys.readouterr().err and not (tmp_path / "m").exists()  # before the merge
    assert main(args) == 0  # the classifier itself merges
    quantize = ["quantize", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "q"), "--quantize", "w8a8"]
    assert main(quantize) == 2  # `packager quantize` on the merged folder
    assert "is a SEQ_CLS model" in capsys.readouterr().err and not (tmp_path / "q").exists()
