"""What `bench/serve.py --scenarios` serves with packager's server: each scenario is a runtime.json over models made
once in the work folder, all on the bench's random Llama (hidden 1024, 8 layers, bf16) except the T5.

- baked-lora: the LoRA merge (packager's streaming merge), baked;
- shared-4: the base with 4 LoRA adapters, requests spread over them (a mixed stream);
- prompt-tuning: the base with a prompt-tuning adapter (16 virtual tokens), unmerged;
- adapterhub: the base with an AdapterHub bottleneck adapter (the `adapters` library);
- t5: a random T5 of t5-small's dimensions (d_model 512, 6+6 layers), seq2seq."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

SCENARIOS = ("baked-lora", "shared-4", "prompt-tuning", "adapterhub", "t5")


def runtime_json(work: Path, scenario: str, base: str, adapter: str) -> tuple[Path, list[str]]:
    """The scenario's runtime.json (written in `work`) and the model names its requests rotate through."""
    folder = work / f"scenario-{scenario}"
    folder.mkdir(parents=True, exist_ok=True)
    config, names = _config(folder, scenario, base, adapter)
    path = folder / "runtime.json"
    path.write_text(json.dumps(config, indent=2))
    return path, names


def _config(folder: Path, scenario: str, base: str, adapter: str) -> tuple[dict, list[str]]:
    if scenario == "baked-lora":
        return {"layout": "baked", "model_dir": _merged(folder, base, adapter), "served_name": "bench"}, ["bench"]
    if scenario == "shared-4":
        from packager.demo import build_adapter

        adapters = {f"a{i}": str(folder / f"a{i}") for i in range(4)}
        for i, path in enumerate(adapters.values()):
            if not Path(path, "adapter_config.json").exists():
                build_adapter(base, path, seed=10 + i, r=16)
        shared = {"layout": "shared", "base_dir": base, "adapters": adapters, "verify_base": "off"}
        return shared, list(adapters)
    if scenario == "prompt-tuning":
        return _unmerged(folder, base, _prompt_tuning(folder, base), "peft"), ["bench"]
    if scenario == "adapterhub":
        return _unmerged(folder, base, _bottleneck(folder, base), "adapters"), ["bench"]
    return {"layout": "baked", "model_dir": _t5(folder), "served_name": "bench", "task": "SEQ_2_SEQ_LM",
            "model_class": "AutoModelForSeq2SeqLM"}, ["bench"]  # fmt: skip


def _unmerged(folder: Path, base: str, adapter: str, library: str) -> dict:
    config = {"layout": "baked", "model_dir": base, "served_name": "bench", "adapter_dir": adapter}
    return {**config, "adapter_library": library} if library != "peft" else config


def _merged(folder: Path, base: str, adapter: str) -> str:
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest

    out = folder / "merged"
    if not (out / "config.json").exists():
        run_merge(ResolveRequest(adapter, base=base), str(out), quiet=True)
    return str(out)


def _prompt_tuning(folder: Path, base: str) -> str:
    out = folder / "prompt"
    if not (out / "adapter_config.json").exists():
        import torch
        from peft import PromptTuningConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(3)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16)
        )
        model.save_pretrained(str(out))
    return str(out)


def _bottleneck(folder: Path, base: str) -> str:
    out = folder / "bottleneck"
    if not (out / "adapter_config.json").exists():
        import adapters

        from tests import adapterhub_saves

        adapterhub_saves.save(base, str(out), adapters.SeqBnConfig(reduction_factor=16), seed=4)
    return str(out)


def _t5(folder: Path) -> str:
    out = folder / "t5"
    if not (out / "config.json").exists():
        import torch
        import transformers

        from tests import families

        torch.manual_seed(5)
        config = transformers.T5Config(vocab_size=384, d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64,
                                       decoder_start_token_id=0)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformers.T5ForConditionalGeneration(config).save_pretrained(str(out))
        families.save_word_tokenizer(str(out), vocab_size=384, specials_last=True)
    return str(out)
