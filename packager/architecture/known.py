"""The architecture check without transformers, for common decoder families.

Building the base on the meta device needs transformers, whose import costs ~2.3 s: more than half the I/O
floor of a 1.1B merge. For the families below the answer is known: every 2-D weight is a Linear except the
input embeddings, nothing is a Conv1D, lm_head is the output embedding. A test compares this against the
meta-device model for each family, so the table cannot drift from transformers. Anything else, or anything
that does not look exactly as expected, falls back to the meta-device model.
"""

from __future__ import annotations

DECODER_FAMILIES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
INPUT_EMBEDDING = "model.embed_tokens"
OUTPUT_EMBEDDING = "lm_head"


def known_module_kinds(config: dict, tensors: dict) -> dict[str, str] | None:
    """Module kinds from stored tensor names and shapes, or None when this base is not a known family."""
    family = DECODER_FAMILIES.get(config.get("model_type", ""))
    if family is None or config.get("architectures") != [family] or "tie_word_embeddings" not in config:
        return None
    if f"{INPUT_EMBEDDING}.weight" not in tensors:
        return None
    kinds: dict[str, str] = {OUTPUT_EMBEDDING: "linear"}  # a Linear even when tied (then not stored)
    for name, info in tensors.items():
        module, _, param = name.rpartition(".")
        if not name.startswith(("model.", "lm_head.")) or param not in ("weight", "bias"):
            return None
        if param == "weight":
            kinds[module] = "embedding" if module == INPUT_EMBEDDING else "linear" if len(info.shape) == 2 else "other"
    return kinds
