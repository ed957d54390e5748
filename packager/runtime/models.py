"""Generate text with a loaded model: one merged model (baked) or a base with PEFT adapters (shared), selected by
the served name. Requests are batched by a scheduler thread (continuous.py where the model allows, grouped.py
otherwise); this module turns a request into a row and the row's tokens back into text."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .batching import BatchLimits, GenerationParams, Row, Scheduler
from .continuous import ContinuousScheduler
from .grouped import GroupedScheduler
from .streaming import safe_prefix

__all__ = ["Engine", "Generation", "GenerationParams", "NoChatTemplate"]


class NoChatTemplate(Exception):
    """The model's tokenizer has no chat template."""


@dataclass(frozen=True)
class Generation:
    """What one request produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or stop string) or "length"


class Engine:
    """A loaded model serving one or more names; a scheduler thread batches the requests."""

    continuous = True  # False: requests carry inputs beside the ids (images) that only `generate` takes

    def __init__(
        self,
        model: Any,
        tokenizers: dict,
        adapters: dict[str, str] | None = None,
        activate: Callable[[str], None] | None = None,
        use_cache: bool = True,
        limits: BatchLimits | None = None,
    ) -> None:
        """`adapters`: served name -> adapter name (None: a merged model); `activate`: selects an adapter by name
        for a library PEFT's batching does not know (AdapterHub); `use_cache`: False where the KV cache does not
        match the full forward pass; `limits`: runtime.json's batch and queue limits."""
        self.model = model.eval() if hasattr(model, "eval") else model  # an ONNX Runtime model has no eval()
        self.tokenizers, self.adapters, self.use_cache = tokenizers, adapters, use_cache
        self.custom_activate = activate
        self.tokenizing = threading.Lock()  # a fast tokenizer's settings are not safe to change from two threads
        self.scheduler = self.make_scheduler(limits or BatchLimits())

    def make_scheduler(self, limits: BatchLimits) -> Scheduler:
        """Continuous batching where the model and its adapters allow (batching_mode), else grouped `generate`."""
        mode = batching_mode(self.model, self.custom_activate, self.use_cache) if self.continuous else None
        if mode is None:
            activate = self.custom_activate or (self.model.set_adapter if self.adapters else None)
            return GroupedScheduler(self.model, limits, self._pad_id(), activate, self.use_cache)
        return ContinuousScheduler(self.model, limits, mode, getattr(self.model, "set_adapter", None))

    def configure(self, limits: BatchLimits) -> None:
        """Serve with these limits (before the first request)."""
        self.scheduler = self.make_scheduler(limits)

    @property
    def names(self) -> list[str]:
        """The model names this engine serves."""
        return list(self.tokenizers)

    def encode_prompt(self, name: str, prompt: str) -> list[int]:
        """Token ids of a plain completion prompt."""
        with self.tokenizing:
            return list(self.tokenizers[name](prompt)["input_ids"])

    def encode_chat(self, name: str, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of chat messages through the tokenizer's chat template, ready for the assistant turn."""
        tokenizer = self.tokenizers[name]
        if not getattr(tokenizer, "chat_template", None):
            raise NoChatTemplate(f"model '{name}' has no chat template; use /v1/completions with a plain prompt")
        with self.tokenizing:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def context_length(self) -> int | None:
        """The model's maximum sequence length (prompt plus completion), when its config says."""
        config = getattr(self.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def submit(self, name: str, prompt_ids: list[int], params: GenerationParams, inputs: dict | None = None) -> Row:
        """Queue one request; raises batching.QueueFull when the queue is full."""
        tokenizer = self.tokenizers[name]
        eos, stops = self._eos_ids(tokenizer), params.stop

        def finished(tokens: list[int]) -> bool:
            """EOS last, or a stop string in the decoded new text."""
            if tokens[-1] in eos:
                return True
            return bool(stops) and any(s in tokenizer.decode(tokens, skip_special_tokens=True) for s in stops)

        adapter = self.adapters[name] if self.adapters else None
        return self.scheduler.submit(Row(adapter, list(prompt_ids), params, finished, inputs))

    def generate(
        self, name: str, prompt_ids: list[int], params: GenerationParams, inputs: dict | None = None
    ) -> Generation:
        """Generate for one prompt with the model (and adapter) served as `name`; `inputs`: what the model takes
        beside the token ids (a vision model's pixel values)."""
        row = self.submit(name, prompt_ids, params, inputs)
        try:
            new_ids = [token for ids in row.stream() for token in ids]
        finally:
            row.cancelled.set()  # a no-op once done; frees the row when the caller went away
        return self._finish(self.tokenizers[name], prompt_ids, new_ids, params)

    def stream(
        self, name: str, prompt_ids: list[int], params: GenerationParams, inputs: dict | None = None
    ) -> Iterator[str | Generation]:
        """Queue the request now (QueueFull raised here), then yield each piece of text once it is final, then the
        Generation; the pieces join to the Generation's text. Closing the iterator early frees the row."""
        return self._texts(name, self.submit(name, prompt_ids, params, inputs))

    def _texts(self, name: str, row: Row) -> Iterator[str | Generation]:
        tokenizer, params = self.tokenizers[name], row.params
        new_ids: list[int] = []
        emitted = ""
        try:
            for ids in row.stream():
                new_ids += ids
                text = safe_prefix(tokenizer.decode(new_ids[:-1], skip_special_tokens=True), params.stop)
                if len(text) > len(emitted) and text.startswith(emitted):
                    yield text[len(emitted) :]
                    emitted = text
        finally:
            row.cancelled.set()  # a no-op once done; stops the row when the client went away
        result = self._finish(tokenizer, row.prompt, new_ids, params)
        if len(result.text) > len(emitted):
            yield result.text[len(emitted) :]
        yield result

    def _finish(self, tokenizer: Any, prompt: list[int], new_ids: list[int], params: GenerationParams) -> Generation:
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        stopped = bool(hits) or (bool(new_ids) and new_ids[-1] in self._eos_ids(tokenizer))
        text = text[: min(hits)] if hits else text
        return Generation(text, len(prompt), len(new_ids), "stop" if stopped else "length")

    def _eos_ids(self, tokenizer: Any) -> set[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())

    def _pad_id(self) -> int:
        tokenizer = next(iter(self.tokenizers.values()))
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0


def batching_mode(model: Any, custom_activate: Callable | None, use_cache: bool) -> str | None:
    """How continuous.py batches this model (its MODES), or None where only grouped `generate` calls can: an
    encoder-decoder, an ONNX model, sliding-window or chunked attention, no usable KV cache, an adapter library
    other than PEFT, or a PEFT method that is neither LoRA-like nor prompt/P-tuning."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or not use_cache or custom_activate is not None:
        return None
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    windowed = getattr(text, "sliding_window", None) or getattr(text, "attention_chunk_size", None)
    layer_types = set(getattr(text, "layer_types", None) or ["full_attention"])
    if getattr(config, "is_encoder_decoder", False) or windowed or layer_types != {"full_attention"}:
        return None
    peft = getattr(model, "peft_config", None)
    if not peft:
        return "merged"
    kinds = {str(getattr(c, "peft_type", "")).rsplit(".", 1)[-1] for c in peft.values()}
    if kinds <= {"PROMPT_TUNING", "P_TUNING"}:
        return "prompt"
    if any(getattr(c, "is_prompt_learning", False) for c in peft.values()):
        return None  # prefix tuning and the rest of prompt learning: their own cache or task ids
    mixable = kinds == {"LORA"} and not any(getattr(c, "use_dora", False) for c in peft.values())
    return "mixed" if mixable else "grouped"
