"""Prometheus metrics for /metrics (text format 0.0.4), named like vLLM's so the same dashboards read both:
requests by endpoint and status, prompt and generated tokens, request time, requests running; and from the
batching scheduler: requests waiting for a place, rows per forward pass, time to first token."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Metrics:
    """Counters updated by the server; `render` gives the exposition text."""

    def __init__(self, scheduler: Any = None) -> None:
        """`scheduler`: the engine's batching.Stats (waiting, batch rows, time to first token), read at render."""
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.seconds_sum = 0.0
        self.seconds_count = 0
        self.running = 0

    def started(self) -> None:
        """A request came in."""
        with self._lock:
            self.running += 1

    def finished(self, endpoint: str, status: int, seconds: float) -> None:
        """A request was answered (for a stream: its headers were sent)."""
        with self._lock:
            self.running -= 1
            self.requests[(endpoint, status)] += 1
            self.seconds_sum += seconds
            self.seconds_count += 1

    def generated(self, prompt_tokens: int, completion_tokens: int) -> None:
        """A generation finished."""
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += completion_tokens

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = [
                "# HELP packager:requests_total Requests answered, by endpoint and HTTP status.",
                "# TYPE packager:requests_total counter",
                *(
                    f'packager:requests_total{{endpoint="{endpoint}",status="{status}"}} {count}'
                    for (endpoint, status), count in sorted(self.requests.items())
                ),
                "# HELP packager:prompt_tokens_total Prompt tokens processed.",
                "# TYPE packager:prompt_tokens_total counter",
                f"packager:prompt_tokens_total {self.prompt_tokens}",
                "# HELP packager:generation_tokens_total Tokens generated.",
                "# TYPE packager:generation_tokens_total counter",
                f"packager:generation_tokens_total {self.generation_tokens}",
                "# HELP packager:request_seconds Time to answer a request (to the first byte of a stream).",
                "# TYPE packager:request_seconds summary",
                f"packager:request_seconds_sum {self.seconds_sum:.6f}",
                f"packager:request_seconds_count {self.seconds_count}",
                "# HELP packager:num_requests_running Requests being answered now.",
                "# TYPE packager:num_requests_running gauge",
                f"packager:num_requests_running {self.running}",
                *self._scheduler_lines(),
            ]
        return "\n".join(lines) + "\n"

    def _scheduler_lines(self) -> list[str]:
        stats = self.scheduler
        if stats is None:
            return []
        return [
            "# HELP packager:num_requests_waiting Requests queued for a place in a batch.",
            "# TYPE packager:num_requests_waiting gauge",
            f"packager:num_requests_waiting {stats.waiting}",
            "# HELP packager:batch_size Rows in each forward pass (or generate call) of the model.",
            "# TYPE packager:batch_size summary",
            f"packager:batch_size_sum {stats.batch_rows}",
            f"packager:batch_size_count {stats.batches}",
            "# HELP packager:time_to_first_token_seconds Time from a request's arrival to its first token.",
            "# TYPE packager:time_to_first_token_seconds summary",
            f"packager:time_to_first_token_seconds_sum {stats.ttft_sum:.6f}",
            f"packager:time_to_first_token_seconds_count {stats.ttft_count}",
        ]
