"""Scoring through the KV cache in fixed-size chunks, a multiple-choice context run once for all its choices.

Why: MindSpore's CPU runtime keeps every compiled graph's intermediate buffers for the life of the process.
Scoring whole sequences (scoring.py's graph path) compiles one graph per (rows, length, scored positions)
bucket and each holds a sequence's worth of buffers (8-12 GB at 110M parameters, benchmarks/RESULTS.md,
"Eval"). Here the model runs the way generate's chunked prefill does (the chunk form of
PreTrainedModel.prepare_inputs_for_generation, `forward_with_cache`): CHUNK tokens per row and call (more
for long rows, which run fewer at a time), so one graph serves every sequence length of its cache length
and its buffers are a chunk's.

A request is the model's input ids (context + continuation)[:-1], of which the last n predict the
continuation: the shared part (all but those n, the context but its last token) and the tail (the n).
lm-eval sends a question once per choice, with the same context, so requests are grouped by shared part and
each group becomes one packed row: the shared part once, then every request's tail one after the other.
The attention bias lets a tail token see the shared part and its own tail only, and its rotary position
is the one it has in its own sequence, so each score is the one of the request alone; the shared part runs
once instead of once per choice, and no cache is copied. Cache slot k holds a row's token k.

Rows, longest first, run `rows` at a time in chunks of columns: a chunk with no scored token goes
through generate's own prompt-chunk graph (decoding._step_function: no output head but the last
position's), the others through `forward_with_cache(..., logits_at=every position)`, log_softmax, each
target's log-prob and whether it is the argmax; only (rows, chunk) numbers come back to the host. A token
never sees the padding after it. Graphs: two per (rows, cache length). Models opt in with
`supports_logits_at`, `supports_chunked_prefill` and `prompt_in_chunk_form()` (Llama with mfcore's
cache-attention kernel and no prefix); the others use scoring.py's whole-sequence graphs.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .decoding import _step_function, _zeros, bucket_length
from .packed_rows import PackedRows, supports_packed_rows

CHUNK = 32         # tokens per row and call: a row is padded to a multiple of it
MAX_CHUNK = 256    # tokens per row and call when few long rows run (_chunk_size)
ROW_TOKENS = 512   # a packed row takes tails while it stays within this (one request alone may be longer)
# Cache lengths are generate's buckets from this up: every row up to 256 tokens shares one pair of graphs (each
# pair compiles in ~5 s at 110M; a shorter cache saved no measurable time per call, benchmarks/RESULTS.md).
MIN_CACHE_LENGTH = 256
# Rows x cache slots one call holds at most: the caches (and the kernel's new copies of them, kept as graph
# buffers) grow with it; long rows run fewer at a time. 8 rows x 512 slots: 0.3 GB of caches at 110M.
CACHE_SLOTS_PER_CALL = 4096
MASK_VALUE = -1e9  # the additive bias of a slot a token must not see (prepare_inputs_for_generation's)


def supports_cached_scoring(model) -> bool:
    """Whether `model` can score through its KV cache in chunks (else scoring.py's whole-sequence graphs)."""
    return supports_packed_rows(model)


def _score_chunk_function(model, use_jit: bool) -> Callable:
    """(input_ids, position_ids, attention_bias, cache_slot of one chunk, logits_at (C,) = 0..C-1, targets
    (B, C) int32, *caches) -> (log p(target) (B, C) float32, target == argmax (B, C) bool, *new caches)."""
    functions = model.__dict__.setdefault("_mfcore_chunk_score_functions", {})
    if use_jit not in functions:
        import mindspore
        from mindspore import mint, ops

        def score(input_ids, position_ids, attention_bias, cache_slot, logits_at, targets, *caches):
            logits, *caches = model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches,
                                                       logits_at=logits_at)
            log_probs = ops.log_softmax(logits, -1)
            picked = mint.gather(log_probs, -1, targets.expand_dims(-1)).squeeze(-1)
            greedy = ops.cast(ops.argmax(logits, -1), mindspore.int32) == targets
            return (picked, greedy) + tuple(caches)

        functions[use_jit] = mindspore.jit(score) if use_jit else score
    return functions[use_jit]


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _rows_for(cache_length: int, batch_size: int) -> int:
    rows = batch_size
    while rows > 1 and rows * cache_length > CACHE_SLOTS_PER_CALL:
        rows //= 2
    return rows


def _chunk_size(rows: int, batch_size: int) -> int:
    """Tokens per row and call: CHUNK, more when long rows run fewer at a time (a perplexity window): rows x
    chunk stays near batch_size x CHUNK, and the cache-attention kernel's copy of the whole cache each call
    is paid for fewer calls. A power of two up to MAX_CHUNK, so it divides every cache length above 512."""
    scale = max(1, batch_size // rows)
    return min(MAX_CHUNK, CHUNK << (scale.bit_length() - 1))


def _pack_rows(groups: List[Tuple[tuple, List[int]]], tails: Sequence[np.ndarray]) -> List[Tuple[tuple, List[int]]]:
    """(shared part, the requests on it) -> rows: the shared part then the requests' tails one after the other,
    cut where a row would pass ROW_TOKENS (a row of one request may be longer)."""
    rows = []
    for key, members in groups:
        current, length = [], len(key)
        for i in members:
            if current and length + len(tails[i]) > ROW_TOKENS:
                rows.append((key, current))
                current, length = [], len(key)
            current.append(i)
            length += len(tails[i])
        rows.append((key, current))
    return rows


def cached_token_logprobs(model, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], batch_size: int = 8,
                          use_jit: bool = True, progress: Optional[Callable[[int], None]] = None
                          ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """For each request, inputs (L,) int ids and targets (n,) ids, n <= L: inputs[L - n + j] predicts
    targets[j]. Returns (log-probs (n,) float32, is-argmax (n,) bool) per request, like
    scoring.token_logprobs; progress(k) after each batch of k requests."""
    from mindspore import Tensor

    shared = [tuple(int(t) for t in ids[:len(ids) - len(target)]) for ids, target in zip(inputs, targets)]
    tails = [np.asarray(ids[len(ids) - len(target):], dtype=np.int32) for ids, target in zip(inputs, targets)]
    groups: Dict[tuple, List[int]] = {}
    for i, key in enumerate(shared):
        groups.setdefault(key, []).append(i)
    rows = _pack_rows(list(groups.items()), tails)
    row_length = [len(key) + sum(len(tails[i]) for i in members) for key, members in rows]
    order = sorted(range(len(rows)), key=lambda r: -row_length[r])  # longest first: a batch pads to its first
    step = _step_function(model, use_jit)
    score = _score_chunk_function(model, use_jit)
    results: List[Optional[Tuple[np.ndarray, np.ndarray]]] = [None] * len(inputs)

    begin = 0
    while begin < len(order):
        cache_length = bucket_length(_round_up(row_length[order[begin]], CHUNK), minimum=MIN_CACHE_LENGTH)
        height = _rows_for(cache_length, batch_size)
        size = _chunk_size(height, batch_size)
        width = _round_up(row_length[order[begin]], size)
        logits_at = Tensor(np.arange(size, dtype=np.int32))
        batch = order[begin:begin + height]
        begin += len(batch)
        layout = PackedRows(height, width, cache_length)
        for r, row in enumerate(batch):
            layout.place(r, *rows[row], tails, targets)
        allowed = layout.visibility()
        picked = np.zeros((height, width), dtype=np.float32)
        greedy = np.zeros((height, width), dtype=bool)
        caches = [_zeros(shape, dtype) for shape, dtype in model.kv_cache_shapes(height, cache_length)]
        for start in range(0, width, size):
            end = start + size
            slot = np.full(cache_length, size, dtype=np.int32)  # the chunk form: slot start + i takes token i
            slot[start:end] = np.arange(size)
            chunk = [Tensor(layout.ids[:, start:end]), Tensor(layout.positions[:, start:end]),
                     Tensor(np.where(allowed[:, start:end], 0.0, MASK_VALUE).astype(np.float32)[:, None]),
                     Tensor(slot)]
            if not layout.scored[:, start:end].any():  # context tokens only: no output head needed
                _, *caches = step(*chunk, *caches)
                continue
            p, g, *caches = score(*chunk, logits_at, Tensor(layout.targets[:, start:end]), *caches)
            picked[:, start:end], greedy[:, start:end] = p.asnumpy(), g.asnumpy()
        done = 0
        for r, row in enumerate(batch):
            for i, begin_at in layout.spans[r]:
                n = len(targets[i])
                results[i] = (picked[r, begin_at:begin_at + n].copy(), greedy[r, begin_at:begin_at + n].copy())
                done += 1
        if progress is not None:
            progress(done)
    return results
