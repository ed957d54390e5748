"""ONNX for embedding models and classifiers (issue 17): exported in the task's class, int8 by onnxruntime,
measured (cosine as served, labels), refused past --max-accuracy-loss, and served by packager's server on
/v1/embeddings and /classify exactly as the artefact answers on the host."""

from __future__ import annotations

import os

import pytest
import torch
from fastapi.testclient import TestClient
from peft import LoraConfig

from packager.artefact.make import make_artefact
from packager.artefact.onnx_encoders import load_encoder, outputs, sentences
from packager.artefact.spec import artefact_spec
from packager.errors import UserInputError, ValidationError
from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from packager.runtime.loading import load_baked
from packager.runtime.server import create_app
from packager.tasks import TASKS, ModelTask
from tests import families

pytestmark = pytest.mark.slow
QUIET = {"log": lambda _line: None}


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> dict:
    """The real all-MiniLM-L6-v2 + a LoRA, merged, then exported fp32 and int8."""
    root = tmp_path_factory.mktemp("minilm-onnx")
    adapter = families.save_minilm_adapter(str(root / "adapter"))
    run_merge(ResolveRequest(adapter, base=families.minilm_base()), str(root / "merged"), quiet=True)
    made = {"merged": str(root / "merged")}
    for name, spec in (("fp32", artefact_spec(export="onnx")), ("int8", artefact_spec("int8", "onnx"))):
        made[name] = make_artefact(made["merged"], spec, str(root / name), False, **QUIET)
    return made


def test_fp32_onnx_embeddings_equal_pytorchs_and_int8_stays_close(minilm) -> None:
    fp32, int8 = minilm["fp32"], minilm["int8"]
    assert fp32.kind == "onnx-fp32" and fp32.accuracy.cosine_min > 0.99999
    # the bound, on real weights, holds for the mean; the shortest clauses move most (min 0.973 measured)
    assert int8.kind == "onnx-int8" and int8.accuracy.cosine_mean >= 0.98 and int8.accuracy.cosine_min >= 0.96
    assert int8.size_bytes < 0.35 * fp32.size_bytes and int8.details["granularity"] in ("per-channel", "per-tensor")
    for folder in (fp32.path, int8.path):  # the server pools as sentence-transformers says: its files travel
        assert {"modules.json", "1_Pooling/config.json"} <= {
            os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
        }


def test_the_server_answers_embeddings_as_the_onnx_artefact_does(minilm) -> None:
    task = ModelTask("FEATURE_EXTRACTION", TASKS["FEATURE_EXTRACTION"][0])
    folder = minilm["int8"].path
    engine = load_baked(folder, "m", "onnx", task="FEATURE_EXTRACTION", model_class=task.auto_class)
    client = TestClient(create_app(engine))
    texts = sentences(6)
    answer = client.post("/v1/embeddings", json={"input": texts, "model": "m", "encoding_format": "float"})
    assert answer.status_code == 200, answer.text
    served = torch.tensor([d["embedding"] for d in answer.json()["data"]])
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, return_tensors="pt")
    expected = outputs(load_encoder(folder, task), batch, task, folder)["embeddings"]
    torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(served.norm(dim=-1), torch.ones(len(texts)), atol=1e-4)  # Normalize travelled too


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bert-cls-onnx")
    base = families.save_word_tokenizer(families.save_base("bert", "BertForPreTraining", str(root / "base")))
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    adapter = families.save_task_adapter(base, str(root / "adapter"), "SEQ_CLS", config, 3)
    run_merge(ResolveRequest(adapter, base=base), str(root / "merged"), quiet=True)
    return {"merged": str(root / "merged"), "root": root}


def test_a_classifier_exports_and_its_labels_are_served(classifier) -> None:
    report = make_artefact(
        classifier["merged"], artefact_spec("int8", "onnx"), str(classifier["root"] / "q"), False, **QUIET
    )
    assert report.kind == "onnx-int8" and report.accuracy.label_agreement is not None
    assert report.details["task"] == "text-classification"
    engine = load_baked(report.path, "m", "onnx", task="SEQ_CLS", model_class=TASKS["SEQ_CLS"][0])
    answer = TestClient(create_app(engine)).post("/classify", json={"input": ["w5 w9 w12", "w7"]})
    assert answer.status_code == 200 and len(answer.json()["data"]) == 2


def test_an_encoder_past_the_accuracy_limit_is_refused_and_nothing_is_written(minilm, tmp_path) -> None:
    spec = artefact_spec("int8", "onnx", max_accuracy_loss=1e-6)
    with pytest.raises(ValidationError, match=r"the onnx-int8 model moved too far.*limit 0\.0% .*nothing was written"):
        make_artefact(minilm["merged"], spec, str(tmp_path / "q"), False, **QUIET)
    assert not (tmp_path / "q").exists()


def test_a_task_onnx_does_not_serve_is_refused_before_any_work(minilm) -> None:
    from packager.artefact.onnx_encoders import check_encoder_exportable

    with pytest.raises(UserInputError, match=r"--export onnx serves causal LMs and .* QUESTION_ANS"):
        check_encoder_exportable("bert", ModelTask("QUESTION_ANS", TASKS["QUESTION_ANS"][0]))
