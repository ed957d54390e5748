"""Dynamic batching through `generate`, for what continuous batching does not take: encoder-decoder models (T5,
BART), ONNX Runtime models, vision-language models, AdapterHub adapters, prefix tuning, adapters whose KV cache
differs from the full pass (decoded without it), sliding-window attention. The oldest waiting row picks the
group (same adapter, same sampling; a seeded row or one with images runs alone), the group's waiting rows run as
one padded `generate` call, each with its own length, stop strings and stream, and the rows that arrive
meanwhile gather for the next call."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from .batching import BatchLimits, Row, Scheduler, group_key


class GroupedScheduler(Scheduler):
    """Serves one group of compatible rows per `generate` call."""

    def __init__(
        self,
        model: Any,
        limits: BatchLimits,
        pad_id: int,
        activate: Callable[[str], None] | None = None,
        use_cache: bool = True,
    ) -> None:
        """`pad_id`: what fills the padding (masked); `activate`: selects a row group's adapter."""
        super().__init__(limits)
        self.model, self.pad_id, self.activate, self.use_cache = model, pad_id, activate, use_cache
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))

    def serve_once(self) -> None:
        """The oldest waiting row's group, as many of its rows as fit, in one `generate` call."""
        rows = self.take(self._fits(), block=True, scan=True)
        if not rows:
            return
        self.stats.running = len(rows)
        error: Exception | None = None
        try:
            self._generate(rows)
        except Exception as exc:  # a failed call fails its unfinished rows, not the server
            error = exc
        for row in rows:
            row.end(error)
        self.stats.running = 0

    def _fits(self) -> Callable[[Row], bool]:
        key: Hashable | None = None
        rows = tokens = 0

        def fits(row: Row) -> bool:
            """Whether `row` joins: the first row's group, a place left, its tokens within the limit."""
            nonlocal key, rows, tokens
            if key is not None and (
                group_key(row) != key
                or rows >= self.limits.max_batch_size
                or tokens + row.budget > self.limits.max_batch_tokens
            ):
                return False
            key, rows, tokens = group_key(row), rows + 1, tokens + row.budget
            return True

        return fits

    def _generate(self, rows: list[Row]) -> None:
        first = rows[0]
        if self.activate is not None and first.adapter is not None:
            self.activate(first.adapter)
        if first.params.seed is not None:
            torch.manual_seed(first.params.seed)
        ids, mask = self._padded([r.prompt for r in rows])
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.params.max_tokens for r in rows),
            "do_sample": not first.greedy,
            "stopping_criteria": [RowsDone(rows)],
            "streamer": RowStreamer(rows, self.stats),
        }
        if not first.greedy:
            kwargs.update(temperature=first.params.temperature, top_p=first.params.top_p, top_k=0)
        if not self.use_cache:
            kwargs["use_cache"] = False
        if getattr(self.model.generation_config, "pad_token_id", None) is None:
            kwargs["pad_token_id"] = self.pad_id
        self.stats.forward(len(rows))
        device = self.model.device
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **(first.inputs or {}), **kwargs
            )

    def _padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts as one batch: left-padded for a decoder (new tokens follow every prompt), right-padded for
        an encoder's input."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            place = slice(0, len(prompt)) if self.encoder_decoder else slice(width - len(prompt), width)
            ids[i, place], mask[i, place] = torch.tensor(prompt, dtype=torch.long), 1
        return ids, mask


class RowStreamer:
    """A transformers streamer for a batch: each new token goes to its row until the row is done; the first call
    (the prompt, or a decoder's start token) is skipped."""

    def __init__(self, rows: list[Row], stats: Any) -> None:
        self.rows, self.stats, self.started = rows, stats, False

    def put(self, value: torch.Tensor) -> None:
        """Called by generate with the newest token of every row."""
        if not self.started:
            self.started = True
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist(), strict=True):
            if not row.done:
                self.stats.took(row, token)

    def end(self) -> None:
        """Called by generate when it is done."""


class RowsDone:
    """Stopping criterion: a row is finished once it says so (length, EOS, stop string, client gone)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        for row in self.rows:
            row.done = row.done or row.cancelled.is_set()
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)
