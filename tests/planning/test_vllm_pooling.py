"""Embeddings models and classifiers go to vLLM's pooling runner where it serves them as packager's server would
(the same pooling, the same probabilities), baked and unquantized; everything else stays with packager's server."""

from __future__ import annotations

import json

import pytest
from peft import LoraConfig

from packager.artefact.spec import ArtefactSpec
from packager.errors import UserInputError
from packager.planning.engine import POOLING_ON_CPU
from packager.planning.job import plan_package
from packager.runtime.config import parse_config
from packager.runtime.vllm_launch import vllm_argv
from tests import families
from tests.requests import package_request

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"], "init_lora_weights": False}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pooling")
    bert = families.save_base("bert", "BertModel", str(root / "bert"))
    return {
        "bert": bert,
        "embed": families.save_task_adapter(
            bert, str(root / "embed"), "FEATURE_EXTRACTION", LoraConfig(task_type="FEATURE_EXTRACTION", **LORA)
        ),
        "classify": families.save_task_adapter(
            bert, str(root / "classify"), "SEQ_CLS", LoraConfig(task_type="SEQ_CLS", **LORA), num_labels=3
        ),
    }


def _plan(adapter: str, tmp_path, layout: str = "baked", **kw):
    request = package_request((("m", adapter),), layout, "", "acme/enc:1", work=str(tmp_path), quiet=True, **kw)
    return plan_package(request).plan


@pytest.mark.parametrize(
    ("adapter", "pooling"),
    [
        ("embed", {"task": "embed", "seq_pooling_type": "MEAN", "use_activation": False}),
        ("classify", {"task": "classify"}),
    ],
)
def test_a_baked_encoder_goes_to_vllms_pooling_runner_pooled_as_packager_pools(encoders, adapter, pooling, tmp_path):
    assert _plan(encoders[adapter], tmp_path / "auto").image.engine_reason == POOLING_ON_CPU  # measured faster
    image = _plan(encoders[adapter], tmp_path, runtime="vllm").image
    assert image.engine == "vllm" and "pooling runner" in image.engine_reason
    assert image.runtime.vllm.pooling == pooling
    config = parse_config(image.runtime.to_json(), "/", {})  # what the image reads back
    argv = vllm_argv(config, "0.0.0.0", 8000)
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert json.loads(argv[argv.index("--pooler-config") + 1]) == pooling


def test_a_sentence_transformers_pooling_vllm_lacks_stays_with_packager(encoders, tmp_path) -> None:
    """max pooling: vLLM's pooler has CLS, LAST and MEAN only."""
    import shutil

    base = shutil.copytree(encoders["bert"], tmp_path / "bert-max")
    (base / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                     "type": "sentence_transformers.models.Pooling"}]))  # fmt: skip
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    image = _plan(encoders["embed"], tmp_path / "w", base=str(base), device="cuda").image
    assert image.engine == "packager" and "max" in image.engine_reason


@pytest.mark.parametrize(
    ("kw", "why"),
    [({"artefact": ArtefactSpec("none", "onnx")}, "onnx"), ({"layout": "shared"}, "shared-layout")],
)
def test_onnx_and_shared_encoders_stay_with_packager(encoders, kw, why, tmp_path) -> None:
    image = _plan(encoders["embed"], tmp_path, device="cuda", **kw).image
    assert image.engine == "packager" and why in image.engine_reason
    with pytest.raises(UserInputError, match=f"--runtime vllm cannot serve this model: .*{why}"):
        _plan(encoders["embed"], tmp_path, runtime="vllm", **kw)


def test_a_vllm_pooling_config_for_a_text_task_is_refused() -> None:
    from packager.runtime.config import ConfigError

    data = {"layout": "baked", "model_dir": "m", "served_name": "x", "engine": "vllm", "task": "TOKEN_CLS",
            "model_class": "AutoModelForTokenClassification", "vllm": {"pooling": {"task": "embed"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="task TOKEN_CLS is served by the packager engine"):
        parse_config(data, "/", {})
    data = {**data, "task": "FEATURE_EXTRACTION", "vllm": {"pooling": {"task": "embed", "seq_pooling_type": "MAX"}}}
    with pytest.raises(ConfigError, match=r"vllm\.pooling must be an object"):
        parse_config(data, "/", {})


def test_the_length_vllm_starts_with_is_the_models_own_limit(encoders, tmp_path) -> None:
    """A sentence-transformers model's max_seq_length caps vLLM's pooling runner (MiniLM: 256 of 512 positions),
    and a --max-model-len above the limit would not start: refused at plan time."""
    import shutil

    base = shutil.copytree(encoders["bert"], tmp_path / "bert-st")
    (base / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    image = _plan(encoders["embed"], tmp_path / "a", base=str(base), runtime="vllm").image
    assert image.runtime.vllm.max_model_len == 48
    with pytest.raises(UserInputError, match="--max-model-len 100 exceeds the model's 48 tokens"):
        _plan(encoders["embed"], tmp_path / "b", base=str(base), max_model_len=100, runtime="vllm")


def test_gpt2s_length_limit_is_its_n_positions() -> None:
    from packager.planning.engine import choose_runtime

    gpt2 = {"architectures": ["GPT2LMHeadModel"], "n_embd": 128, "n_head": 4, "n_positions": 256}
    assert choose_runtime("auto", "baked", gpt2, ArtefactSpec(), []).context_length == 256


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_vision_language_models_stay_with_packager_as_measured(device) -> None:
    """bench/RESULTS.md: neither LLaVA nor Idefics2 starts in the CPU image's vLLM; `--runtime vllm` says why."""
    from packager.planning.engine import choose_runtime
    from packager.planning.vllm_models import VISION_ON_CPU

    llava = {"architectures": ["LlavaForConditionalGeneration"], "text_config": {"hidden_size": 64}}
    choice = choose_runtime("auto", "baked", llava, ArtefactSpec(), [], device, "IMAGE_TEXT_TO_TEXT")
    assert choice.engine == "packager" and VISION_ON_CPU in choice.reason
    with pytest.raises(UserInputError, match=r"torchvision, which has no CPU build.*--runtime packager"):
        choose_runtime("vllm", "baked", llava, ArtefactSpec(), [], device, "IMAGE_TEXT_TO_TEXT")


def test_a_pooling_no_engine_computes_is_refused_at_plan_time(encoders, tmp_path) -> None:
    """Two modes at once (sentence-transformers concatenates them): packager's server would exit 2 at start
    (runtime/encoders.read_pooling) and vLLM's pooler has no such mode, so no image is planned."""
    import shutil

    base = shutil.copytree(encoders["bert"], tmp_path / "bert-two")
    (base / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                     "type": "sentence_transformers.models.Pooling"}]))  # fmt: skip
    (base / "1_Pooling").mkdir()
    both = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}
    (base / "1_Pooling" / "config.json").write_text(json.dumps(both))
    with pytest.raises(UserInputError, match=r"pooling \(cls, mean\) is not one mode .*; set one pooling_mode_"):
        _plan(encoders["embed"], tmp_path / "w", base=str(base))
    assert not (tmp_path / "w").exists()
