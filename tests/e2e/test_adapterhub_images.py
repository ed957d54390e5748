"""End to end: AdapterHub adapters that do not merge, in real images served by packager's server with the
`adapters` library copied in: a baked bottleneck adapter on a decoder, a shared image of a bottleneck adapter and
prefix tuning on one mounted base, and a shared image of two classifiers with their own prediction heads on a
mounted BERT base, each answering as the library's own model does (issue 18)."""

from __future__ import annotations

import os

import adapters
import pytest
import torch
from transformers import AutoTokenizer

from packager.demo import build_base
from tests import adapterhub_saves, families
from tests.e2e import containers
from tests.e2e.test_containers import PROMPT, _package, served_answers

pytestmark = pytest.mark.e2e
TEXTS = ["w5 w9 w17 w33", "w40 w41"]


def _readable(root: str) -> str:
    """Bind-mounted into a container that runs as uid 10001."""
    os.chmod(root, 0o755)
    for path, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(path, name), 0o755)
        for name in files:
            os.chmod(os.path.join(path, name), 0o644)
    return root


def test_a_baked_bottleneck_image_answers_as_the_library(runtime_image, docker_client, tmp_path) -> None:
    base = build_base(str(tmp_path / "base"), seed=0, hidden_size=128)
    adapter = adapterhub_saves.save(base, str(tmp_path / "bottleneck"), adapters.SeqBnConfig(reduction_factor=4))
    report = _package(tmp_path, runtime_image, [("bn", adapter)], "baked", "demo/hub-bn:1", runtime="auto")
    assert containers.runtime_json(report.context)["adapter_library"] == "adapters"
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(PROMPT)["input_ids"]
    library = adapterhub_saves.greedy(adapterhub_saves.loaded(base, adapter), ids, 12)
    plain = adapterhub_saves.greedy(adapterhub_saves.loaded_base(base), ids, 12)
    assert library != plain, "the adapter must change the answer, or this test proves nothing"
    expected = {"bn": tokenizer.decode(library, skip_special_tokens=True)}
    assert served_answers(docker_client, report.image, expected) == expected


def test_a_shared_image_serves_bottleneck_and_prefix_tuning_as_the_library(runtime_image, docker_client, tmp_path):
    """Two AdapterHub methods on one mounted base, chosen by `model`: each answers as the library's own model."""
    base = build_base(str(tmp_path / "shared" / "base"), seed=0, hidden_size=128)
    bottleneck, prefix = adapters.SeqBnConfig(reduction_factor=8), adapters.PrefixTuningConfig(prefix_length=4)
    named = [
        ("bn", adapterhub_saves.save(base, str(tmp_path / "bn"), bottleneck, seed=3)),
        ("prefix", adapterhub_saves.save(base, str(tmp_path / "prefix"), prefix, seed=4, safetensors=False)),
    ]
    _readable(str(tmp_path / "shared"))
    report = _package(tmp_path, runtime_image, named, "shared", "demo/hub-shared:1", runtime="auto", allow_pickle=True)
    assert containers.runtime_json(report.context)["adapter_library"] == "adapters"
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(PROMPT)["input_ids"]
    library = {name: adapterhub_saves.greedy(adapterhub_saves.loaded(base, folder), ids, 12) for name, folder in named}
    expected = {name: tokenizer.decode(tokens, skip_special_tokens=True) for name, tokens in library.items()}
    assert expected["bn"] != expected["prefix"], "the adapters must differ, or this test proves nothing"
    assert served_answers(docker_client, report.image, expected, base) == expected


def test_a_shared_image_of_prediction_heads_classifies_as_the_library(runtime_image, docker_client, tmp_path):
    bert = families.save_word_tokenizer(families.save_base("bert", "BertModel", str(tmp_path / "bert" / "base")))
    _readable(str(tmp_path / "bert"))
    config = adapters.SeqBnConfig(reduction_factor=4)
    named = [
        (name, adapterhub_saves.save(bert, str(tmp_path / name), config, head="classification", seed=seed))
        for name, seed in (("tone", 1), ("topic", 2))
    ]
    report = _package(tmp_path, runtime_image, named, "shared", "demo/hub-heads:1", runtime="auto")
    tokenizer = AutoTokenizer.from_pretrained(bert)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    expected = {}
    for name, folder in named:
        with torch.no_grad():
            expected[name] = adapterhub_saves.loaded(bert, folder)(**batch).logits.softmax(-1)
    assert not torch.allclose(expected["tone"], expected["topic"]), "the heads must differ, or this proves nothing"
    container = containers.start(docker_client, report.image, base_dir=bert)
    try:
        containers.wait_healthy(container)
        for name, probs in expected.items():
            answer = containers.call(container, "/classify", {"model": name, "input": TEXTS})["data"]
            torch.testing.assert_close(torch.tensor([d["probs"] for d in answer]), probs, atol=1e-5, rtol=1e-4)
            labels = [adapterhub_saves.HEAD_LABELS[int(i)] for i in probs.argmax(-1)]
            assert [d["label"] for d in answer] == labels
    finally:
        container.remove(force=True)
        docker_client.images.remove(report.image, force=True)
