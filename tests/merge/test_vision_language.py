"""A LoRA on a vision-language model (Idefics2, as in the PEFT/IDEFICS2 article, and LLaVA) merges with PEFT
parity on an image, vision tower included, and its processor travels with the merged model (issue 11)."""

from __future__ import annotations

import os

import pytest
import torch
from peft import PeftModel

from packager.errors import IncompatibleAdapterError
from packager.merge.run import run_merge
from packager.merge.verify import image_inputs, model_outputs
from packager.resolve.resolver import ResolveRequest
from tests import families

SAVE = {"idefics2": families.save_idefics2, "llava": families.save_llava}


@pytest.fixture(scope="module", params=sorted(SAVE))
def vlm(request, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp(request.param)
    base = SAVE[request.param](str(root / "base"))
    return base, families.save_vlm_adapter(base, str(root / "adapter"), family=request.param)


@pytest.fixture(scope="module")
def idefics2(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("idefics2")
    base = families.save_idefics2(str(root / "base"))
    return base, families.save_vlm_adapter(base, str(root / "adapter"))


def test_a_vision_language_lora_merges_like_peft_on_an_image(vlm, tmp_path) -> None:
    from transformers import AutoModelForImageTextToText

    base, adapter = vlm
    outcome = run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "merged"), quiet=True)
    assert outcome.resolved.plan.task.name == "IMAGE_TEXT_TO_TEXT" and outcome.parity.passed
    inputs = image_inputs(base)
    assert "pixel_values" in inputs
    reference = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter)
    unmerged = model_outputs(reference, inputs)
    merged = model_outputs(reference.merge_and_unload(), inputs)
    ours = model_outputs(AutoModelForImageTextToText.from_pretrained(str(tmp_path / "merged")), inputs)
    torch.testing.assert_close(ours, unmerged, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, merged, atol=1e-5, rtol=1e-4)
    names = set(os.listdir(tmp_path / "merged"))
    assert {"preprocessor_config.json", "processor_config.json", "chat_template.jinja"} <= names
    assert any("vision" in t.name and t.deltas for t in outcome.resolved.plan.merge.tensors)  # the tower's LoRA


def test_the_vision_tower_lora_changes_the_answer(vlm) -> None:
    """The parity inputs reach the vision tower: a LoRA there moves the logits (so a wrong one would be seen)."""
    from transformers import AutoModelForImageTextToText

    base, adapter = vlm
    inputs = image_inputs(base)
    plain = model_outputs(AutoModelForImageTextToText.from_pretrained(base), inputs)
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter)
    for name, module in model.named_modules():
        if ("text_model" in name or "language_model" in name) and isinstance(getattr(module, "scaling", None), dict):
            module.scaling = dict.fromkeys(module.scaling, 0.0)  # only the vision tower's LoRA left
    assert (model_outputs(model, inputs) - plain).abs().max() > 1e-4


def test_a_vision_base_without_its_processor_is_refused(idefics2, tmp_path) -> None:
    import shutil

    base, adapter = idefics2
    bare = tmp_path / "bare"
    shutil.copytree(base, bare, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(IncompatibleAdapterError, match=r"no preprocessor_config\.json"):
        run_merge(ResolveRequest(adapter, base=str(bare)), str(tmp_path / "merged"), quiet=True)
