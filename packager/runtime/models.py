"""Generate text with a loaded model: one merged model (baked) or a base with PEFT adapters (shared), selected by
the served name."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .streaming import Cancelled, TokenQueue, safe_prefix


class NoChatTemplate(Exception):
    """The model's tokenizer has no chat template."""


@dataclass(frozen=True)
class GenerationParams:
    """OpenAI-style sampling settings; temperature 0 means greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """What one request produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or stop string) or "length"


class _StopOnText:
    """Stopping criterion: stop once the decoded new text contains any stop string."""

    def __init__(self, tokenizer: Any, start: int, stops: Sequence[str]) -> None:
        self.tokenizer, self.start, self.stops = tokenizer, start, stops

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.start :], skip_special_tokens=True)
        done = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Engine:
    """A loaded model serving one or more names; generation is serialised by a lock."""

    def __init__(self, model: Any, tokenizers: dict, adapters=None, activate=None, use_cache: bool = True) -> None:
        """`adapters`: served name -> adapter name (None: a merged model), chosen per request by `activate`
        (default PEFT's set_adapter); `use_cache`: False where the KV cache does not match the full forward pass."""
        self.model = model.eval() if hasattr(model, "eval") else model  # an ONNX Runtime model has no eval()
        self.tokenizers, self.adapters, self.use_cache = tokenizers, adapters, use_cache
        self.activate: Callable[[str], None] | None = activate or (model.set_adapter if adapters else None)
        self.lock = threading.Lock()
        self.tokenizing = threading.Lock()  # a fast tokenizer's settings are not safe to change from two threads

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

    def generate(
        self, name: str, prompt_ids: list[int], params: GenerationParams, inputs: dict | None = None
    ) -> Generation:
        """Generate for one prompt with the model (and adapter) served as `name`; `inputs`: what the model takes
        beside the token ids (a vision model's pixel values)."""
        with self.lock:
            self._select(name, params)
            new_ids = self._run(self.tokenizers[name], prompt_ids, params, inputs=inputs)
        return self._finish(self.tokenizers[name], prompt_ids, new_ids, params)

    def stream(
        self, name: str, prompt_ids: list[int], params: GenerationParams, inputs: dict | None = None
    ) -> Iterator[str | Generation]:
        """Generate as `generate` does, yielding each piece of text once it is final, then the Generation; the
        pieces join to the Generation's text. Closing the iterator early stops the generation."""
        tokenizer, streamer, cancel = self.tokenizers[name], TokenQueue(), Cancelled()
        new_ids: list[int] = []
        emitted = ""
        with self.lock:
            self._select(name, params)
            worker = threading.Thread(
                target=self._run_streaming, args=(tokenizer, prompt_ids, params, streamer, cancel, inputs)
            )
            worker.start()
            try:
                for ids in streamer:
                    new_ids += ids
                    text = safe_prefix(tokenizer.decode(new_ids[:-1], skip_special_tokens=True), params.stop)
                    if len(text) > len(emitted) and text.startswith(emitted):
                        yield text[len(emitted) :]
                        emitted = text
            finally:
                cancel.event.set()  # a no-op once generation has ended; stops it when the client went away
                worker.join()
        result = self._finish(tokenizer, prompt_ids, new_ids, params)
        if len(result.text) > len(emitted):
            yield result.text[len(emitted) :]
        yield result

    def _run_streaming(self, tokenizer: Any, prompt_ids: list[int], params, streamer, cancel, inputs) -> None:
        try:
            self._run(tokenizer, prompt_ids, params, streamer=streamer, cancel=cancel, inputs=inputs)
        finally:
            streamer.end()  # generate does not call end() when it raises: never leave the reader waiting

    def _select(self, name: str, params: GenerationParams) -> None:
        if self.activate is not None:
            self.activate(self.adapters[name])
        if params.seed is not None:
            torch.manual_seed(params.seed)

    def _run(
        self, tokenizer: Any, prompt_ids: list[int], params: GenerationParams, streamer=None, cancel=None, inputs=None
    ) -> list[int]:
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": params.temperature > 0}
        if not self.use_cache:
            kwargs["use_cache"] = False
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        # an encoder-decoder's output starts with the decoder's start token, not with the prompt
        start = 1 if getattr(self.model.config, "is_encoder_decoder", False) else len(prompt_ids)
        criteria = [_StopOnText(tokenizer, start, params.stop)] if params.stop else []
        criteria += [cancel] if cancel is not None else []
        if criteria:
            kwargs["stopping_criteria"] = criteria
        if streamer is not None:
            kwargs["streamer"] = streamer
        if self.model.generation_config.pad_token_id is None:
            pad = tokenizer.pad_token_id
            kwargs["pad_token_id"] = pad if pad is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **(inputs or {}), **kwargs)
        return out[0, start:].tolist()

    def _finish(self, tokenizer: Any, prompt: list[int], new_ids: list[int], params: GenerationParams) -> Generation:
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        stopped = bool(hits) or (bool(new_ids) and new_ids[-1] in self._eos_ids(tokenizer))
        text = text[: min(hits)] if hits else text
        return Generation(text, len(prompt), len(new_ids), "stop" if stopped else "length")

    def _eos_ids(self, tokenizer: Any) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
