"""Print what the vLLM in a runtime image serves, from its own model registry, as the JSON packager ships in
packager/data/vllm_models.json:

    docker run --rm --network none --entrypoint python3 packager-vllm:<hash> - < scripts/vllm_models.py

Architectures by task (text generation, embeddings, sequence and token classification, multimodal), which
text-generation ones take LoRA adapters, and the ones vLLM runs through its transformers backend.
"""

import json

import vllm
from vllm.model_executor.models import registry
from vllm.model_executor.models.interfaces import supports_lora


def _lora(architectures: list[str]) -> list[str]:
    found = []
    for arch in architectures:
        try:
            cls = registry.ModelRegistry._try_load_model_cls(arch)
        except Exception:  # an architecture whose module does not import here takes no adapters either
            continue
        if cls is not None and supports_lora(cls):
            found.append(arch)
    return found


generation = sorted(registry._TEXT_GENERATION_MODELS)
print(
    json.dumps(
        {
            "vllm": vllm.__version__,
            "text_generation": generation,
            "lora": _lora(generation),
            "transformers_backend": sorted(registry._TRANSFORMERS_SUPPORTED_MODELS),
            "embedding": sorted(registry._EMBEDDING_MODELS),
            "sequence_classification": sorted(registry._SEQUENCE_CLASSIFICATION_MODELS),
            "token_classification": sorted(registry._TOKEN_CLASSIFICATION_MODELS),
            "multimodal": sorted(registry._MULTIMODAL_MODELS),
        },
        indent=1,
        sort_keys=True,
    )
)
