"""Run by the llm-compressor venv (.venv-llmcompressor), never by packager's: round-to-nearest `oneshot` of a model
folder with QuantizationModifier, one preset after another, each saved compressed (as llm-compressor users do).

usage: python llmcompressor_oneshot.py MODEL_DIR OUTPUT_ROOT PRESET[:GROUP_SIZE] ...
"""

import sys

import torch
from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from transformers import AutoModelForCausalLM


def recipe(item: str) -> QuantizationModifier:
    preset, _, group = item.partition(":")
    if not group:
        return QuantizationModifier(scheme=preset, targets="Linear", ignore=["lm_head"])
    scheme = preset_name_to_scheme(preset, ["Linear"])
    scheme.weights.group_size = int(group)
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=scheme.weights)}
    return QuantizationModifier(config_groups=groups, ignore=["lm_head"])


def main(model_dir: str, root: str, items: list[str]) -> None:
    for item in items:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
        with torch.no_grad():
            oneshot(model=model, recipe=recipe(item))
        model.save_pretrained(f"{root}/{item.replace(':', '-')}", save_compressed=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
