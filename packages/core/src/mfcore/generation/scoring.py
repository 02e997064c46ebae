"""Scoring text with a causal LM: log-likelihoods of continuations, rolling log-likelihood of long texts,
per-token log-probs of a prompt. What lm-evaluation-harness asks of a model (and what an OpenAI-style
server needs for `echo` + `logprobs`), with lm-eval's semantics, so scores equal those of its `hf` backend.

Models that can (Llama with mfcore's cache-attention kernel) score through the KV cache in fixed-size chunks,
each distinct context once for all its continuations (chunked_scoring.py): a graph's buffers are a chunk's.
The others, and `through_cache=False`, take the whole-sequence graphs below.

One compiled graph per (batch, length, scored positions) bucket does the work: the model's forward with
the output head on the scored positions only (`model(input_ids, gather_index=...)`, logits (B, K, V): a
continuation's K tokens, not the context's), then log_softmax, the log-prob of each next token and whether
it is the argmax; only (B, K) numbers come back to the host, never the logits. Sequences are right-padded
to a bucket length (`score_length_bucket`) and batches to a power of two, so a whole evaluation compiles a
handful of graphs. Right padding changes nothing for a causal model: a real token never sees the pad after it.

Pure functions (no MindSpore): `rolling_windows` (lm-eval's get_rolling_token_windows + make_disjoint_window).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .chunked_scoring import cached_token_logprobs, supports_cached_scoring
from .decoding import bucket_length


# -- windows (pure) ---------------------------------------------------------------------------------

def rolling_windows(tokens: Sequence[int], prefix_token: int, max_seq_len: int,
                    context_len: int = 1) -> List[Tuple[List[int], List[int]]]:
    """(context, continuation) windows that score every token of `tokens` exactly once, lm-eval's rule.

    lm_eval.utils.get_rolling_token_windows followed by make_disjoint_window. The model sees at most
    max_seq_len tokens per window; the first window predicts up to max_seq_len tokens after `prefix_token`,
    each later one predicts the next max_seq_len - context_len + 1 tokens with the tokens before them (up
    to max_seq_len in all) as context. context_len=1 gives disjoint windows (lm-eval's
    loglikelihood_rolling); a larger one is a sliding window with stride max_seq_len - context_len + 1 (the
    "perplexity with a stride" of the transformers docs).
    """
    if not 1 <= context_len <= max_seq_len:
        raise ValueError(f"context_len must be in [1, max_seq_len={max_seq_len}], got {context_len}")
    tokens = [int(t) for t in tokens]
    if not tokens:
        return []
    pred_len = max_seq_len - context_len + 1
    windows = []
    first = min(max_seq_len, len(tokens))
    windows.append(([prefix_token] + tokens[:first - 1], tokens[:first]))
    predicted = first
    while predicted < len(tokens):
        window_pred_len = min(len(tokens) - predicted, pred_len)
        window_end = predicted + window_pred_len
        inputs = tokens[window_end - max_seq_len - 1:window_end - 1]
        windows.append((inputs, tokens[window_end - window_pred_len:window_end]))
        predicted += window_pred_len
    # make_disjoint_window: the context is what the input holds before the predicted tokens
    return [(inputs[:len(inputs) - (len(target) - 1)], target) for inputs, target in windows]


def stride_context_len(max_seq_len: int, stride: Optional[int]) -> int:
    """rolling_windows' context_len for a stride (new tokens scored per window); None = disjoint windows."""
    if stride is None:
        return 1
    if not 1 <= stride <= max_seq_len:
        raise ValueError(f"stride must be in [1, max_length={max_seq_len}], got {stride}")
    return max_seq_len - stride + 1


# -- the compiled scorer ----------------------------------------------------------------------------

def _score_function(model, use_jit: bool) -> Callable:
    """input_ids (B, S), positions (B, K), targets (B, K) int32 -> (log p(target | ids up to its position)
    (B, K) float32, target == argmax (B, K) bool). Only the K positions' logits are made when the model
    supports construct(gather_index=); otherwise all of them, gathered after. Kept on the model and reused;
    one compile per input shape."""
    functions = model.__dict__.setdefault("_mfcore_score_functions", {})
    if use_jit not in functions:
        import mindspore
        from mindspore import mint, ops

        gathered = bool(getattr(model, "supports_gather_index", False))

        def score(input_ids, positions, targets):
            if gathered:
                logits = model(input_ids, gather_index=positions)
            else:
                logits = model(input_ids)
                index = positions.expand_dims(-1)
                logits = mint.gather(logits, 1, ops.broadcast_to(index, index.shape[:2] + (logits.shape[-1],)))
            log_probs = ops.log_softmax(logits, -1)
            picked = mint.gather(log_probs, -1, targets.expand_dims(-1)).squeeze(-1)
            greedy = ops.cast(ops.argmax(logits, -1), mindspore.int32) == targets
            return picked, greedy

        functions[use_jit] = mindspore.jit(score) if use_jit else score
    return functions[use_jit]


def score_length_bucket(n: int) -> int:
    """Sequence length a scoring batch is padded to: generate's buckets (powers of two up to 512, then steps of
    512), at least 32. Finer steps waste less compute on padding but cost memory: MindSpore's CPU runtime
    keeps every compiled graph's intermediate buffers for the life of the process (benchmarks/RESULTS.md)."""
    return bucket_length(n, minimum=32)


def _scored_bucket(n: int, width: int) -> int:
    """Positions scored per row: a power of two from 8, at most the row width."""
    return min(width, max(8, 1 << max(0, n - 1).bit_length()))


# Tokens (rows x padded length) one scoring call runs at most: MindSpore's CPU runtime keeps each compiled
# graph's intermediate buffers for the life of the process, and they grow with rows x length (a 110M model
# at 8 x 256 holds ~5 GB), so long rows run in fewer rows per call. benchmarks/RESULTS.md, Eval.
TOKENS_PER_CALL = 512


def _batch_bucket(n: int, batch_size: int, width: int) -> int:
    """Rows a call is padded to: batch_size (or the power of two above n when n is smaller: a short last batch
    runs padded rather than compile a graph of its own), then halved until rows x width fits TOKENS_PER_CALL."""
    rows = batch_size if n >= batch_size else 1 << max(0, n - 1).bit_length()
    while rows > 1 and rows * width > TOKENS_PER_CALL:
        rows //= 2
    return rows


def token_logprobs(model, sequences: Sequence[Sequence[int]], batch_size: int = 8, use_jit: bool = True,
                   progress: Optional[Callable[[int], None]] = None,
                   score_last: Optional[Sequence[int]] = None,
                   through_cache: Optional[bool] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """For every sequence of ids, the log-prob of each token given the ones before it and whether it was the
    argmax: (logprobs (n - 1,) float32, greedy (n - 1,) bool) for the tokens 1..n-1 (token 0 has no
    prediction); with score_last, only for each sequence's last score_last[i] tokens. Batched longest
    first; `progress(k)` is called after each batch of k sequences. through_cache: score through the KV cache
    in chunks (chunked_scoring.py); None = where the model supports it, False = the whole-sequence graphs."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    counts = [len(r) - 1 for r in rows] if score_last is None else [int(n) for n in score_last]
    for i, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"sequence {i} has {len(row)} token(s); scoring needs at least 2 "
                             f"(a context token and one to predict)")
        if not 1 <= counts[i] <= len(row) - 1:
            raise ValueError(f"sequence {i}: cannot score its last {counts[i]} of {len(row)} tokens")
    vocab = getattr(model.config, "vocab_size", None)
    for i, row in enumerate(rows):  # before any graph runs: an id outside the table breaks them
        if vocab is not None and (row.min() < 0 or row.max() >= vocab):
            raise ValueError(f"sequence {i}: token id {int(row.max() if row.max() >= vocab else row.min())}"
                             f" is outside the vocabulary [0, {vocab})")
    cached = supports_cached_scoring(model) if through_cache is None else bool(through_cache)
    if cached and not supports_cached_scoring(model):
        raise ValueError(f"through_cache=True: {type(model).__name__} cannot score through its KV cache here "
                         "(it needs forward_with_cache(logits_at=), chunked prefill and the chunk form)")
    was_training = getattr(model, "training", False)
    if was_training:
        model.set_train(False)
    try:
        if cached:
            return cached_token_logprobs(model, [row[:-1] for row in rows],
                                         [row[len(row) - n:] for row, n in zip(rows, counts)],
                                         batch_size=batch_size, use_jit=use_jit, progress=progress)
        return _graph_token_logprobs(model, rows, counts, batch_size, use_jit, progress)
    finally:
        if was_training:
            model.set_train(True)


def _graph_token_logprobs(model, rows: List[np.ndarray], counts: List[int], batch_size: int, use_jit: bool,
                          progress: Optional[Callable[[int], None]]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """token_logprobs through the whole-sequence scoring graphs (_score_function)."""
    from mindspore import Tensor

    score = _score_function(model, use_jit)
    results: List[Optional[Tuple[np.ndarray, np.ndarray]]] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # longest first: a batch pads to its first
    begin = 0
    while begin < len(order):
        width = score_length_bucket(len(rows[order[begin]]) - 1)
        height = _batch_bucket(len(order), batch_size, width)
        batch = order[begin:begin + height]
        begin += len(batch)
        scored = _scored_bucket(max(counts[i] for i in batch), width)
        ids = np.zeros((height, width), dtype=np.int32)
        positions = np.zeros((height, scored), dtype=np.int32)
        targets = np.zeros((height, scored), dtype=np.int32)
        for r, i in enumerate(batch):
            row, n = rows[i], counts[i]
            ids[r, :len(row) - 1] = row[:-1]
            positions[r, :n] = np.arange(len(row) - 1 - n, len(row) - 1)  # position t predicts token t + 1
            targets[r, :n] = row[len(row) - n:]
        picked, greedy = score(Tensor(ids), Tensor(positions), Tensor(targets))
        picked, greedy = picked.asnumpy(), greedy.asnumpy()
        for r, i in enumerate(batch):
            results[i] = (picked[r, :counts[i]].astype(np.float32), greedy[r, :counts[i]].astype(bool))
        if progress is not None:
            progress(len(batch))
    return results


def prompt_logprobs(model, ids: Sequence[int], use_jit: bool = True) -> List[Optional[float]]:
    """Per-token log-probs of one sequence, aligned 1:1 with it: entry t is log p(ids[t] | ids[:t]); the
    first token has no prediction and gets None (what an OpenAI `echo=True, logprobs=...` reply carries)."""
    ids = [int(t) for t in np.asarray(ids).reshape(-1)]
    if len(ids) < 2:
        return [None] * len(ids)
    picked, _ = token_logprobs(model, [ids], batch_size=1, use_jit=use_jit)[0]
    return [None] + [float(x) for x in picked]


def _max_length(model, max_length: Optional[int]) -> int:
    if max_length:
        return int(max_length)
    config = model.config
    for name in ("seq_length", "max_position_embedding", "max_position_embeddings"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 2048


def loglikelihood_tokens(model, pairs: Sequence[Tuple[Sequence[int], Sequence[int]]], batch_size: int = 8,
                         max_length: Optional[int] = None, use_jit: bool = True,
                         progress: Optional[Callable[[int], None]] = None,
                         through_cache: Optional[bool] = None) -> List[Tuple[float, bool]]:
    """(sum of log p(continuation | context), whether every continuation token is the argmax) per
    (context ids, continuation ids) pair, as lm-eval's hf backend computes it: the model sees at most
    max_length tokens, the context cut from the left when context + continuation is longer. through_cache:
    see token_logprobs."""
    limit = _max_length(model, max_length)
    sequences, counts = [], []
    for i, (context, continuation) in enumerate(pairs):
        context, continuation = [int(t) for t in context], [int(t) for t in continuation]
        if not context or not continuation:
            raise ValueError(f"pair {i}: the context and the continuation both need at least one token "
                             f"(an empty context is conditioned on the BOS/EOS token: pass it as the context)")
        if len(continuation) > limit:
            raise ValueError(f"pair {i}: the continuation has {len(continuation)} tokens, more than "
                             f"max_length {limit}")
        sequences.append((context + continuation)[-(limit + 1):])
        counts.append(len(continuation))
    scored = token_logprobs(model, sequences, batch_size=batch_size, use_jit=use_jit, progress=progress,
                            score_last=counts, through_cache=through_cache)
    return [(float(np.sum(picked, dtype=np.float64)), bool(greedy.all())) for picked, greedy in scored]


def loglikelihood(model, contexts: Sequence, continuations: Sequence, tokenizer=None, batch_size: int = 8,
                  max_length: Optional[int] = None, use_jit: bool = True) -> List[Tuple[float, bool]]:
    """(sum log-prob, is_greedy) of each continuation after its context. Both are token id lists, or strings
    with `tokenizer=` (encoded as lm-eval does: the whole text, then split where the context's ids end, with
    the context's trailing spaces moved to the continuation; an empty context means BOS, else EOS)."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    pairs = []
    for context, continuation in zip(contexts, continuations):
        if isinstance(context, str) or isinstance(continuation, str):
            if tokenizer is None:
                raise ValueError("text contexts/continuations need the tokenizer: pass tokenizer=")
            pairs.append(encode_pair(tokenizer, context, continuation))
        else:
            pairs.append((list(context), list(continuation)))
    return loglikelihood_tokens(model, pairs, batch_size=batch_size, max_length=max_length, use_jit=use_jit)


def prefix_token_id(tokenizer) -> int:
    """The token an empty context stands for: BOS, else EOS (lm-eval's prefix_token_id)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos if bos is not None else tokenizer.eos_token_id)


def encode_pair(tokenizer, context: str, continuation: str, add_special_tokens: bool = False):
    """(context ids, continuation ids) as lm-eval's TemplateLM encodes a causal pair."""
    if context == "":
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], ids) if ids and ids[0] != prefix else (ids[:1], ids[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=add_special_tokens)
    context_ids = tokenizer.encode(context, add_special_tokens=add_special_tokens)
    return context_ids, whole[len(context_ids):]


def loglikelihood_rolling(model, texts: Sequence, tokenizer=None, max_length: Optional[int] = None,
                          stride: Optional[int] = None, prefix_token: Optional[int] = None, batch_size: int = 8,
                          use_jit: bool = True, progress: Optional[Callable[[int], None]] = None) -> List[float]:
    """Sum of log-probs of every token of each text (token id lists, or strings with `tokenizer=`), scored
    in windows of max_length (default: the model's seq_length) as lm-eval's loglikelihood_rolling does: the
    first token conditioned on `prefix_token` (default BOS, else EOS). stride=None gives lm-eval's
    disjoint windows; a stride < max_length scores each window's last `stride` tokens with the tokens
    before them as context. Perplexity of a text: exp(-sum / number of tokens)."""
    limit = _max_length(model, max_length)
    context_len = stride_context_len(limit, stride)
    if prefix_token is None:
        if tokenizer is None:
            raise ValueError("loglikelihood_rolling needs prefix_token= or tokenizer= (for its BOS/EOS id)")
        prefix_token = prefix_token_id(tokenizer)
    pairs, owners = [], []
    for i, text in enumerate(texts):
        if isinstance(text, str):
            if tokenizer is None:
                raise ValueError("text inputs need the tokenizer: pass tokenizer=")
            text = tokenizer.encode(text, add_special_tokens=False)
        for window in rolling_windows(text, int(prefix_token), limit, context_len):
            pairs.append(window)
            owners.append(i)
    scored = loglikelihood_tokens(model, pairs, batch_size=batch_size, max_length=limit, use_jit=use_jit,
                                  progress=progress)
    totals = [0.0] * len(texts)
    for owner, (logprob, _) in zip(owners, scored):
        totals[owner] += logprob
    return totals
