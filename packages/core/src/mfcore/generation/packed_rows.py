"""Several sequences packed into one row of a KV cache: each sees a shared part and itself only.

Used by cached scoring (a multiple-choice context once, its choices after it) and by the server's packed
prefill (waiting prompts end to end, nothing shared). Pure numpy: the layout and the visibility mask that
becomes the attention bias of the chunk form.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def supports_packed_rows(model) -> bool:
    """Whether `model` can run packed rows through its KV cache in chunks: the chunk form's per-token bias
    from the first call on, and forward_with_cache(logits_at=) for the positions that need logits."""
    return bool(getattr(model, "supports_logits_at", False) and getattr(model, "supports_chunked_prefill", False)
                and model.prompt_in_chunk_form())


class PackedRows:
    """The token ids, rotary positions, targets and segments of a batch of packed rows (cache slot k holds a
    row's token k). Segment -1 is the shared part, i >= 0 request i's tail, -2 padding. Scoring packs a
    context once with its choices as tails; the server packs waiting prompts as tails of an empty shared
    part (each then sees only itself)."""

    def __init__(self, rows: int, width: int, cache_length: int):
        self.ids = np.zeros((rows, width), dtype=np.int32)
        self.positions = np.zeros((rows, width), dtype=np.int32)
        self.targets = np.zeros((rows, width), dtype=np.int32)
        self.scored = np.zeros((rows, width), dtype=bool)
        self.segments = np.full((rows, cache_length), -2, dtype=np.int64)
        self.spans: List[List[Tuple[int, int]]] = [[] for _ in range(rows)]

    def place(self, r: int, key: tuple, members: List[int], tails, targets=None) -> None:
        """Row r: the shared tokens `key`, then tails[i] for i in members (their targets, when scored)."""
        shared = len(key)
        self.ids[r, :shared] = key
        self.positions[r, :shared] = np.arange(shared)
        self.segments[r, :shared] = -1
        at = shared
        for i in members:
            n = len(tails[i])
            self.ids[r, at:at + n] = tails[i]
            self.positions[r, at:at + n] = np.arange(shared, shared + n)  # each tail continues the shared part
            if targets is not None:
                self.targets[r, at:at + n] = targets[i]
                self.scored[r, at:at + n] = True
            self.segments[r, at:at + n] = i
            self.spans[r].append((i, at))
            at += n

    def visibility(self) -> np.ndarray:
        """allowed (rows, width, cache length): a token sees the slots up to its own that hold the shared part
        or its own tail (padding sees the shared part and padding: never read, but no row is empty)."""
        width = self.ids.shape[1]
        query = self.segments[:, :width, None]
        key = self.segments[:, None, :]
        causal = np.arange(self.segments.shape[1])[None, :] <= np.arange(width)[:, None]
        return causal[None] & ((key == -1) | (key == query))
