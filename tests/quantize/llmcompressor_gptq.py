"""Run by the llm-compressor venv (.venv-llmcompressor), never by packager's: llm-compressor's own GPTQ step
(`quantize_weight`, as GPTQModifier calls it: its default activation order, blocks of 128, 1% dampening, the scale
from the memoryless min-max observer of the original weight) on a weight and Hessian read from a file.

usage: python llmcompressor_gptq.py IN.safetensors OUT.safetensors PRESET[:GROUP_SIZE]
"""

import sys

import torch
from compressed_tensors.quantization import preset_name_to_scheme
from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
from llmcompressor.observers import Observer
from safetensors.torch import load_file, save_file


def main(source: str, target: str, item: str) -> None:
    preset, _, group = item.partition(":")
    args = preset_name_to_scheme(preset, ["Linear"]).weights
    if group:
        args.group_size = int(group)
    args.actorder = "static"  # GPTQModifier's default, an alias of "weight"
    tensors = load_file(source)
    module = torch.nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0], bias=False)
    module.weight.data = tensors["weight"]
    module.weight_observer = Observer.load_from_registry("memoryless_minmax", base_name="weight", args=args)
    module.weight_observer(module.weight)
    with torch.no_grad():
        _loss, result = quantize_weight(module, args, tensors["hessian"].clone(), blocksize=128, percdamp=0.01)
    save_file({"weight": result["weight"].contiguous(), "weight_scale": result["weight_scale"].contiguous()}, target)


if __name__ == "__main__":
    main(*sys.argv[1:])
