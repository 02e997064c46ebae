"""GET /metrics: the server's counters in Prometheus' text format (written by hand: no extra dependency)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np

PREFIX = "mfcore"


class Metrics:
    """HTTP request counts by route and status; the rest is read from the engine when scraped."""

    def __init__(self):
        self.requests = collections.Counter()  # (route, status) -> count
        self.lock = threading.Lock()

    def count(self, route: str, status: int) -> None:
        with self.lock:
            self.requests[(route, int(status))] += 1

    def render(self, engine: Optional[object]) -> str:
        lines = [f"# HELP {PREFIX}_requests_total HTTP requests by route and status code.",
                 f"# TYPE {PREFIX}_requests_total counter"]
        with self.lock:
            for (route, status), value in sorted(self.requests.items()):
                lines.append(f'{PREFIX}_requests_total{{route="{route}",status="{status}"}} {value}')
        if engine is None:
            return "\n".join(lines) + "\n"
        stats = engine.stats
        ttft = list(engine.ttft)
        now = time.monotonic()
        window = 10.0
        recent = sum(count for at, count in list(engine.recent_tokens) if now - at <= window)

        def metric(name, kind, help_text, value):
            lines.extend([f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} {kind}",
                          f"{PREFIX}_{name} {value}"])

        metric("prompt_tokens_total", "counter", "Prompt tokens processed.", stats["prompt_tokens"])
        metric("generation_tokens_total", "counter", "Tokens generated.", stats["generation_tokens"])
        metric("prefills_total", "counter", "Prefills run (each packs the prompts that joined together).",
               stats["prefills"])
        metric("decode_steps_total", "counter", "Batched decode steps run.", stats["steps"])
        metric("request_errors_total", "counter", "Requests the engine failed.", stats["errors"])
        metric("queue_length", "gauge", "Sequences waiting for a slot.", engine.queue_length)
        metric("running_sequences", "gauge", "Sequences holding a slot.", engine.running)
        metric("slots", "gauge", "Rows of the decode batch (--max-batch).", engine.max_batch)
        metric("generation_tokens_per_second", "gauge", f"Tokens generated per second over the last {window:.0f} s.",
               round(recent / window, 3))
        lines.extend([f"# HELP {PREFIX}_time_to_first_token_seconds Time from submission to the first token "
                      f"(the latest 1000 sequences).", f"# TYPE {PREFIX}_time_to_first_token_seconds summary"])
        if ttft:
            for quantile in (0.5, 0.9, 0.99):
                lines.append(f'{PREFIX}_time_to_first_token_seconds{{quantile="{quantile}"}} '
                             f"{float(np.quantile(ttft, quantile)):.6f}")
        lines.append(f"{PREFIX}_time_to_first_token_seconds_sum {sum(ttft):.6f}")
        lines.append(f"{PREFIX}_time_to_first_token_seconds_count {len(ttft)}")
        return "\n".join(lines) + "\n"
