"""Models that answer with vectors or labels instead of text: embeddings (FEATURE_EXTRACTION, pooled as the
model's sentence-transformers config says, else mean pooling over the attention mask) and classifiers (SEQ_CLS:
one label per input; TOKEN_CLS: one per token)."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .batching import BatchLimits
from .files import read_json
from .gathering import Gatherer, Texts

ENCODER_TASKS = ("FEATURE_EXTRACTION", "SEQ_CLS", "TOKEN_CLS")
# sentence-transformers' Pooling config keys -> the mode; one of them is true in a config packager serves
POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


class PoolingUnsupported(ValueError):
    """The model's sentence-transformers pooling is not one packager's server computes."""


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one embedding, and whether it is L2-normalized (a Normalize module)."""

    mode: str = "mean"
    normalize: bool = False
    source: str = "default: no sentence-transformers config"

    def describe(self) -> str:
        """e.g. `mean, normalized (modules.json)`."""
        return f"{self.mode}{', normalized' if self.normalize else ''} ({self.source})"


def read_pooling(folder: str) -> Pooling:
    """The pooling of a model folder's sentence-transformers modules.json, else mean pooling."""
    modules = read_json(os.path.join(folder, "modules.json"))
    if not isinstance(modules, list):
        return Pooling()
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    normalize = "Normalize" in types
    if "Pooling" not in types:
        return Pooling(normalize=normalize, source="modules.json without a Pooling module: mean")
    config = read_json(os.path.join(folder, str(types["Pooling"].get("path", "")), "config.json")) or {}
    chosen = [mode for key, mode in POOLING_KEYS.items() if config.get(key)]
    unknown = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in POOLING_KEYS]
    if len(chosen) != 1 or unknown:
        raise PoolingUnsupported(
            f"the model's sentence-transformers pooling ({', '.join(chosen + unknown) or 'none'}) is not one mode "
            f"packager serves ({', '.join(POOLING_KEYS.values())}); set one pooling_mode_* in its Pooling config"
        )
    return Pooling(chosen[0], normalize, "modules.json")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """One vector per row of `hidden` (batch, tokens, dim), over the tokens `mask` keeps."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "cls":
        vectors = hidden[:, 0]
    elif pooling.mode == "max":
        vectors = hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(1)
    elif pooling.mode == "lasttoken":
        vectors = hidden[torch.arange(hidden.shape[0]), mask.sum(1).clamp(min=1) - 1]
    else:
        total, count = (hidden * keep).sum(1), keep.sum(1).clamp(min=1)
        vectors = total / (count.sqrt() if pooling.mode == "mean_sqrt_len" else count)
    return torch.nn.functional.normalize(vectors, dim=-1) if pooling.normalize else vectors


class Encoder:
    """A loaded encoder serving one or more names (a merged model, or a base with PEFT adapters by name)."""

    def __init__(
        self,
        model: Any,
        tokenizers: dict[str, Any],
        task: str,
        adapters: dict[str, str] | None = None,
        pooling: Pooling | None = None,
        activate: Callable[[str], None] | None = None,
        labels: dict[str, dict[int, str]] | None = None,
        limits: BatchLimits | None = None,
    ) -> None:
        """`adapters`: served name -> adapter name, chosen per pass by `activate` (default PEFT's set_adapter);
        `labels`: a served name's own id2label (a prediction head's), else the model config's; `limits`:
        runtime.json's batch and queue limits (gathering.py gathers concurrent requests into passes)."""
        model = model.eval() if hasattr(model, "eval") else model  # an onnxruntime model has no training mode
        self.model, self.tokenizers, self.task, self.adapters = model, tokenizers, task, adapters
        self.activate = activate or (model.set_adapter if adapters is not None else None)
        self.labels = labels or {}
        self.embedding_pooling = pooling or Pooling()
        self.scheduler = Gatherer(self._run, limits or BatchLimits())
        # a fast tokenizer switches truncation on (forward) and off (token counts) in place: two request threads
        # doing that at once raise "Already borrowed"
        self.tokenizing = threading.Lock()
        self._forward_args = forward_parameters(model)
        for tokenizer in tokenizers.values():
            _padding_for_batches(model, tokenizer)

    @property
    def pooling(self) -> str | None:
        """How token vectors become one embedding, in words (None for classifiers)."""
        return self.embedding_pooling.describe() if self.task == "FEATURE_EXTRACTION" else None

    @property
    def names(self) -> list[str]:
        """The model names this engine serves."""
        return list(self.tokenizers)

    def context_length(self) -> int | None:
        """The longest input the model takes, in tokens."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def tokenize(self, name: str, texts: list[str]) -> list[dict[str, list[int]]]:
        """Each text's tokens (ids, mask, token types), special tokens included, uncut: a row's length is its
        count; a row longer than the tokenizer's maximum is cut when it is encoded (`embed`, `classify`)."""
        with self.tokenizing:
            return _rows(self.tokenizers[name](texts), len(texts))

    def count_tokens(self, name: str, texts: list[str]) -> list[int]:
        """Each input's length in tokens, special tokens included."""
        return [len(row["input_ids"]) for row in self.tokenize(name, texts)]

    def configure(self, limits: BatchLimits) -> None:
        """Serve with these limits (before the first request)."""
        self.scheduler = Gatherer(self._run, limits)

    def embed(self, name: str, texts: list[str], rows: list[dict] | None = None) -> list[list[float]]:
        """One vector per text: the last hidden states pooled over the tokens the mask keeps (`rows`: the texts as
        `tokenize` gave them, when the caller has them already)."""
        return self.vectors(self.submit(name, texts, rows).wait())

    def classify(self, name: str, texts: list[str], rows: list[dict] | None = None) -> list[dict[str, Any]]:
        """Per text: the label and class probabilities (SEQ_CLS), or those of each token (TOKEN_CLS); `rows` as
        for `embed`."""
        return self.labelled(name, self.submit(name, texts, rows).wait())

    def vectors(self, outputs: list[Any]) -> list[list[float]]:
        """A pass's embedding outputs as lists of floats."""
        return [vector.tolist() for vector in outputs]

    def labelled(self, name: str, outputs: list[Any]) -> list[dict[str, Any]]:
        """A pass's classifier outputs with the labels of the classifier served as `name`."""
        labels = self.labels.get(name) or self.model.config.id2label
        if self.task == "SEQ_CLS":
            return [{"label": labels[int(p.argmax())], "probs": p.tolist()} for p in outputs]
        tokenizer = self.tokenizers[name]
        return [
            {"tokens": [_token(tokenizer, i, p, labels) for i, p in zip(ids, probs, strict=True)]}
            for ids, probs in outputs
        ]

    def num_classes(self, name: str) -> int:
        """How many labels the classifier served as `name` has."""
        return len(self.labels[name]) if name in self.labels else int(self.model.config.num_labels)

    def submit(
        self, name: str, texts: list[str], rows: list[dict] | None = None, notify: Callable[[], None] | None = None
    ) -> Texts:
        """Queue the texts for the gatherer's passes (`notify`: called from its thread when their outputs are in);
        raises batching.QueueFull when the queue is full."""
        rows = rows or self.tokenize(name, texts)
        limit = getattr(self.tokenizers[name], "model_max_length", None)
        if isinstance(limit, int) and any(len(r["input_ids"]) > limit for r in rows):
            with self.tokenizing:  # rare: encoded again, cut as the tokenizer cuts (its special tokens kept)
                rows = _rows(self.tokenizers[name](texts, truncation=True), len(texts))
        return self.scheduler.submit(Texts(name, rows, notify=notify))

    @torch.inference_mode()
    def _run(self, name: str, rows: list[dict[str, list[int]]]) -> list[Any]:
        """One padded forward pass: per row its pooled vector (embeddings), class probabilities (SEQ_CLS), or
        (token ids, per-token probabilities) without the padding (TOKEN_CLS)."""
        batch = pad(rows, self.tokenizers[name])
        device = self.model.device if hasattr(self.model, "device") else next(self.model.parameters()).device
        taken = {k: v.to(device) for k, v in batch.items() if k in self._forward_args}  # DistilBERT: no token types
        if self.activate is not None:
            self.activate(self.adapters[name])
        result = self.model(**taken)
        mask = batch["attention_mask"]
        if self.task == "FEATURE_EXTRACTION":
            return list(pool(result.last_hidden_state.cpu().float(), mask, self.embedding_pooling).unbind())
        probs = result.logits.cpu().float().softmax(-1)
        if self.task == "SEQ_CLS":
            return list(probs.unbind())
        ids = batch["input_ids"]
        return [(ids[i][mask[i].bool()].tolist(), probs[i][mask[i].bool()]) for i in range(len(rows))]


def _rows(encodings: Any, count: int) -> list[dict[str, list[int]]]:
    """A batch encoding as one dict per text."""
    return [{key: values[i] for key, values in encodings.items()} for i in range(count)]


def pad(rows: list[dict[str, list[int]]], tokenizer: Any) -> dict[str, torch.Tensor]:
    """Tokenized texts as one batch, padded on the tokenizer's side: input ids with its pad token, the attention
    mask and everything else with zeros."""
    width = max(len(r["input_ids"]) for r in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else 0
        padded = [
            [fill] * (width - len(r[key])) + r[key]
            if tokenizer.padding_side == "left"
            else r[key] + [fill] * (width - len(r[key]))
            for r in rows
        ]
        batch[key] = torch.tensor(padded, dtype=torch.long)
    return batch


def forward_parameters(model: Any) -> set[str]:
    """The inputs the model's forward names (a PEFT model's: its base model's); behind a `*args, **kwargs` wrapper
    (the `adapters` library's), those of the first class in the model's MRO whose forward names them."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    names = set(inspect.signature(forward).parameters)
    wrapped = {"args", "kwargs"}
    for cls in type(model).__mro__ if names <= wrapped else ():
        own = cls.__dict__.get("forward")
        named = set(inspect.signature(own).parameters) - {"self"} if callable(own) else wrapped
        if not named <= wrapped:
            return named
    return names


def _padding_for_batches(model: Any, tokenizer: Any) -> None:
    """Decoder tokenizers (Llama, Qwen) often have no pad token, and a decoder classifier finds each input's last
    token by the config's pad_token_id: use EOS for both, as fine-tuning scripts do, so a batch can be padded."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    if getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id


def _token(tokenizer: Any, token_id: int, probs: torch.Tensor, labels: dict) -> dict[str, Any]:
    return {
        "token": tokenizer.convert_ids_to_tokens(token_id),
        "label": labels[int(probs.argmax())],
        "probs": probs.tolist(),
    }
