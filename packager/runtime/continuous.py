"""Continuous batching for decoder-only models: one running batch with one KV cache; at every step waiting rows
are prefilled and joined to it, every row gets its next token from one forward pass, and a finished (or
abandoned) row leaves at once, freeing its place.

Rows of different lengths share the cache left-padded: the attention mask hides the padding and each row's
position ids count only its own tokens, so a row decodes as it would alone (tests/runtime/test_batching.py holds
it token for token). How a row's adapter enters the pass is the batch's mode:
- merged: no adapter (a merged or plain model);
- mixed: one LoRA (or the base) per row in the same pass: plain LoRA adapters stacked (lora_stack.py), others
  through PEFT's `adapter_names` (a pass whose rows share one adapter activates it instead: PEFT's plain path);
- grouped: adapter kinds PEFT cannot mix (IA3, LoHa, LoKr, DoRA, ...): the batch holds one adapter at a time,
  activated before each pass; a row of another adapter waits for the batch to drain, and nothing is admitted
  past it, so no adapter starves;
- prompt: prompt tuning and P-tuning: each row's virtual tokens are embeddings put before its prompt, then the
  base model decodes; rows of different adapters (and virtual-token counts) mix freely."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .batching import BatchLimits, Row, Scheduler
from .lora_stack import LoraStack, stackable

MODES = ("merged", "mixed", "grouped", "prompt")


class ContinuousScheduler(Scheduler):
    """Serves rows from the running batch, admitting waiting ones at each step."""

    def __init__(
        self,
        model: Any,
        limits: BatchLimits,
        mode: str = "merged",
        activate: Callable[[str], None] | None = None,
    ) -> None:
        """`model`: a transformers causal LM, or a PeftModel on one; `activate`: selects an adapter (grouped)."""
        super().__init__(limits)
        self.model, self.mode, self.activate = model, mode, activate
        self.net = model.get_base_model() if mode == "prompt" else model  # what runs the passes
        params = set(inspect.signature(self.net.forward).parameters)
        if hasattr(model, "get_base_model"):
            params |= set(inspect.signature(model.get_base_model().forward).parameters)
        self.positions = "position_ids" in params  # ALiBi models (Bloom, MPT) take their positions from the mask
        self.last_only = "logits_to_keep" in params
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.group: str | None = None  # grouped mode: the adapter of the running batch
        self.active: str | None = None
        self.virtual: dict[str, torch.Tensor] = {}
        self.stack = LoraStack(model, list(model.peft_config)) if mode == "mixed" and stackable(model) else None

    def serve_once(self) -> None:
        """Admit what fits, prefill it, then one decoding step for every row of the batch."""
        # grouped: an empty batch starts the oldest row's adapter and takes all its waiting rows; a running one
        # admits no row past one of another adapter, so that adapter is next
        new = self.take(self._fits(), block=not self.rows, scan=self.mode == "grouped" and not self.rows)
        try:
            if new:
                self._join(new)
            if self.rows:
                self._decode()
        except Exception as exc:  # a failed pass (out of memory, a bad input) fails its rows, not the server
            for row in self.rows + new:
                row.end(exc)
            self.rows, self.cache, self.group = [], None, None
            self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.stats.running = len(self.rows)

    def _fits(self) -> Callable[[Row], bool]:
        rows, tokens = len(self.rows), sum(r.budget for r in self.rows)
        group = self.group

        def fits(row: Row) -> bool:
            """Whether `row` joins: a place left, its tokens within the limit, its adapter (grouped)."""
            nonlocal rows, tokens, group
            if rows >= self.limits.max_batch_size or (rows and tokens + row.budget > self.limits.max_batch_tokens):
                return False
            if self.mode == "grouped" and rows and row.adapter != group:
                return False
            rows, tokens, group = rows + 1, tokens + row.budget, row.adapter
            return True

        return fits

    def _join(self, rows: list[Row]) -> None:
        """Prefill the new rows in one left-padded pass; each gets its first token, then joins the batch."""
        cache = DynamicCache()
        width = max(self._prefix_length(r) + len(r.prompt) for r in rows)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            mask[i, width - self._prefix_length(row) - len(row.prompt) :] = 1
        inputs = self._prompt_inputs(rows, width)
        logits = self._forward(rows, inputs, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        self._merge(rows, cache, mask)
        self.group = rows[0].adapter if self.mode == "grouped" else None
        self._emit(rows, logits)

    def _decode(self) -> None:
        """One token for every row of the running batch."""
        last = torch.tensor([[r.tokens[-1]] for r in self.rows], dtype=torch.long)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=torch.long)], dim=1)
        logits = self._forward(self.rows, {"input_ids": last}, self.mask, positions, self.cache)
        self._emit(list(self.rows), logits)

    def _forward(self, rows: list[Row], inputs: dict, mask: torch.Tensor, positions: torch.Tensor, cache) -> Any:
        device = self.net.device
        kwargs: dict[str, Any] = {k: v.to(device) for k, v in inputs.items()}
        if self.positions:
            kwargs["position_ids"] = positions.to(device)
        if self.last_only:
            kwargs["logits_to_keep"] = 1
        kwargs.update(attention_mask=mask.to(device), past_key_values=cache, use_cache=True)
        adapters = [r.adapter for r in rows]
        if self.stack is not None:
            with self.stack.rows(adapters):
                return self._run(**kwargs)
        if self.mode == "mixed" and len(set(adapters)) > 1:
            kwargs["adapter_names"] = [a or "__base__" for a in adapters]
        elif self.mode in ("mixed", "grouped") and adapters[0] != self.active and self.activate is not None:
            self.activate(adapters[0] or "")  # one adapter in the pass: PEFT's plain path, no row indexing
            self.active = adapters[0]
        return self._run(**kwargs)

    def _run(self, **kwargs: Any) -> torch.Tensor:
        """One pass; the last position's logits of every row, float32, on the CPU."""
        self.stats.forward(len(kwargs["attention_mask"]))
        with torch.inference_mode():
            out = self.net(**kwargs)
        return out.logits[:, -1, :].float().cpu()

    def _emit(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Each row's next token; finished rows leave the batch."""
        for row, token in zip(rows, choose(rows, logits), strict=True):
            self.stats.took(row, token)
        self._retire()

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        for row in self.rows:
            if row.done:
                row.end()
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask, self.group = None, torch.zeros(0, 0, dtype=torch.long), None
            return
        index = torch.tensor(keep)
        start = int(self.mask[index].any(0).nonzero()[0])  # columns that are padding in every row left: drop them
        self.mask = self.mask[index, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]

    def _merge(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Join a prefilled batch to the running one, left-padding the shorter to the longer."""
        if self.cache is None:
            self.rows, self.cache, self.mask = list(rows), cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, width, -1), _left_pad(mask, width, -1)])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width, -2), _left_pad(new.keys, width, -2)])
            old.values = torch.cat([_left_pad(old.values, width, -2), _left_pad(new.values, width, -2)])
        self.rows += rows

    def _prefix_length(self, row: Row) -> int:
        return self._virtual(row.adapter).shape[0] if self.mode == "prompt" else 0

    def _prompt_inputs(self, rows: list[Row], width: int) -> dict[str, torch.Tensor]:
        """Token ids, left-padded; in prompt mode, embeddings: each row's virtual tokens, then its prompt."""
        if self.mode != "prompt":
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt)
            return {"input_ids": ids}
        embed = self.net.get_input_embeddings()
        with torch.inference_mode():
            rows_embedded = [
                torch.cat([self._virtual(r.adapter), embed(torch.tensor(r.prompt, device=self.net.device))])
                for r in rows
            ]
        embeds = torch.zeros(len(rows), width, rows_embedded[0].shape[-1], dtype=rows_embedded[0].dtype)
        for i, row_embeds in enumerate(rows_embedded):
            embeds[i, width - row_embeds.shape[0] :] = row_embeds.cpu()
        return {"inputs_embeds": embeds}

    def _virtual(self, adapter: str | None) -> torch.Tensor:
        """An adapter's virtual-token embeddings (prompt tuning, P-tuning), computed once, in the model's dtype."""
        key = adapter or ""
        if key not in self.virtual:
            self.model.set_adapter(key)
            with torch.inference_mode():
                prompt = self.model.get_prompt(batch_size=1)[0]
            dtype = self.net.get_input_embeddings().weight.dtype
            self.virtual[key] = prompt.to(dtype)
        return self.virtual[key]


def choose(rows: list[Row], logits: torch.Tensor) -> list[int]:
    """Each row's next token: the most likely for greedy rows; sampled at the row's temperature within its
    top-p nucleus, from its own seeded stream when it has one."""
    tokens = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        if not row.greedy:
            tokens[i] = sample(logits[i], row.params.temperature, row.params.top_p, row.rng)
    return tokens


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token from softmax(logits / temperature), keeping the smallest set of tokens whose mass reaches top_p."""
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(-1) - ordered > top_p  # the most likely token always stays
        probs = probs.scatter(0, order, ordered.masked_fill(outside, 0))
    return int(torch.multinomial(probs, 1, generator=generator))


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (-dim - 1) + [missing, 0]
    return F.pad(tensor, pad)
