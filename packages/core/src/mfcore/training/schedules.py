"""Learning-rate schedules: pure functions of the optimizer step (no MindSpore).

The trainer computes the rate in Python and passes it to the compiled step as a scalar tensor, so a
schedule never forces a recompile, and resuming at step N gives exactly the rate of step N. Semantics
follow Hugging Face's `get_*_schedule_with_warmup` (update number `step`, counted from 0, uses
`lr_at(step)`), with MindFormers' `lr_end` floor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mfcore.errors import ConfigError

# MindFormers' lr_schedule type names -> ours.
SCHEDULE_ALIASES = {
    "cosine": "cosine", "cosinewithwarmuplr": "cosine", "cosine_with_warmup": "cosine",
    "linear": "linear", "linearwithwarmuplr": "linear", "linear_with_warmup": "linear",
    "constant": "constant", "constantwarmuplr": "constant", "constant_with_warmup": "constant",
    "warmuplr": "constant",
}


@dataclass(frozen=True)
class LRSchedule:
    kind: str = "cosine"
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    total_steps: int = 1
    lr_end: float = 0.0

    @classmethod
    def create(cls, kind: str, learning_rate: float, total_steps: int, warmup_steps: Optional[int] = None,
               warmup_ratio: Optional[float] = None, lr_end: float = 0.0, where: str = "lr_schedule"):
        name = SCHEDULE_ALIASES.get(str(kind).lower())
        if name is None:
            raise ConfigError(f"{where}.type", f"unknown schedule {kind!r}; use cosine "
                                               "(CosineWithWarmUpLR), linear (LinearWithWarmUpLR) or constant")
        if warmup_steps is None:
            ratio = float(warmup_ratio or 0.0)
            if not 0.0 <= ratio < 1.0:
                raise ConfigError(f"{where}.warmup_ratio", f"must be in [0, 1), got {warmup_ratio!r}")
            warmup_steps = int(round(ratio * total_steps))
        if warmup_steps < 0:
            raise ConfigError(f"{where}.warmup_steps", f"must be >= 0, got {warmup_steps}")
        if learning_rate <= 0:
            raise ConfigError(f"{where}.learning_rate", f"must be > 0, got {learning_rate}")
        return cls(name, float(learning_rate), int(warmup_steps), max(int(total_steps), 1), float(lr_end))

    def __call__(self, step: int) -> float:
        return lr_at(step, self.kind, self.learning_rate, self.warmup_steps, self.total_steps, self.lr_end)


def lr_at(step: int, kind: str, learning_rate: float, warmup_steps: int, total_steps: int,
          lr_end: float = 0.0) -> float:
    """Linear warmup from 0 over `warmup_steps`, then cosine / linear decay to `lr_end` at
    `total_steps` (or constant)."""
    if step < warmup_steps:
        return learning_rate * step / max(1, warmup_steps)
    if kind == "constant":
        return learning_rate
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "linear":
        factor = 1.0 - progress
    else:
        raise ConfigError("lr_schedule.type", f"unknown schedule {kind!r}")
    return lr_end + (learning_rate - lr_end) * factor
