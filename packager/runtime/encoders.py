"""Models that answer with vectors or labels instead of text: embeddings (FEATURE_EXTRACTION, mean pooling over
the attention mask) and classifiers (SEQ_CLS: one label per input; TOKEN_CLS: one per token)."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import torch

POOLING = "mean"  # over the tokens the attention mask keeps: what sentence-transformers' MiniLM models use


class Encoder:
    """A loaded encoder serving one or more names (a merged model, or a base with PEFT adapters by name)."""

    def __init__(self, model: Any, tokenizers: dict[str, Any], task: str, adapters: dict[str, str] | None = None):
        self.model, self.tokenizers, self.task, self.adapters = model.eval(), tokenizers, task, adapters
        self.lock = threading.Lock()
        model_forward = model.get_base_model().forward if adapters is not None else model.forward
        self._forward_args = set(inspect.signature(model_forward).parameters)

    @property
    def pooling(self) -> str | None:
        """How token vectors become one embedding (None for classifiers)."""
        return POOLING if self.task == "FEATURE_EXTRACTION" else None

    @property
    def names(self) -> list[str]:
        """The model names this engine serves."""
        return list(self.tokenizers)

    def context_length(self) -> int | None:
        """The longest input the model takes, in tokens."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def count_tokens(self, name: str, texts: list[str]) -> list[int]:
        """Each input's length in tokens, special tokens included."""
        return [len(ids) for ids in self.tokenizers[name](texts)["input_ids"]]

    @torch.inference_mode()
    def embed(self, name: str, texts: list[str]) -> list[list[float]]:
        """One vector per text: the last hidden states averaged over the tokens the mask keeps."""
        batch, hidden = self._forward(name, texts, "last_hidden_state")
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().tolist()

    @torch.inference_mode()
    def classify(self, name: str, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: the label and class probabilities (SEQ_CLS), or those of each token (TOKEN_CLS)."""
        batch, logits = self._forward(name, texts, "logits")
        probs = logits.float().softmax(-1)
        labels = self.model.config.id2label
        if self.task == "SEQ_CLS":
            return [{"label": labels[int(p.argmax())], "probs": p.tolist()} for p in probs]
        tokenizer = self.tokenizers[name]
        return [
            {"tokens": [_token(tokenizer, i, p, labels) for i, p, keep in zip(ids, row, mask, strict=True) if keep]}
            for ids, row, mask in zip(batch["input_ids"].tolist(), probs, batch["attention_mask"].tolist(), strict=True)
        ]

    @property
    def num_classes(self) -> int:
        """How many labels the classifier has."""
        return int(self.model.config.num_labels)

    def _forward(self, name: str, texts: list[str], output: str) -> tuple[dict, torch.Tensor]:
        batch = self.tokenizers[name](texts, padding=True, truncation=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        taken = {k: v.to(device) for k, v in batch.items() if k in self._forward_args}  # DistilBERT: no token types
        with self.lock:
            if self.adapters is not None:
                self.model.set_adapter(self.adapters[name])
            result = self.model(**taken)
        return batch, getattr(result, output).cpu()


def _token(tokenizer: Any, token_id: int, probs: torch.Tensor, labels: dict) -> dict[str, Any]:
    return {
        "token": tokenizer.convert_ids_to_tokens(token_id),
        "label": labels[int(probs.argmax())],
        "probs": probs.tolist(),
    }
