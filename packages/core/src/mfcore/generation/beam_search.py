"""Beam search (`num_beams`, `length_penalty`, `early_stopping`), step for step transformers' `_beam_search`
(transformers 4.5x / 5: the vectorised version), so the same checkpoint gives the same beams.

Per step, on the host in float32: log-softmax of each running beam's logits plus its score; the best
beams_to_keep = max(2, 1 + number of EOS ids) * num_beams continuations of each prompt; those ending in
EOS (or at max length) among the first num_beams become finished hypotheses scored sum / generated
length ** length_penalty; the best num_beams unfinished ones run on, the KV cache rows reordered to them.
early_stopping: True stops a prompt once num_beams hypotheses are finished; False and "never" stop when
no running beam can beat the worst finished one (transformers' heuristics). Greedy choice only (no beam
sampling), no logits processors. The model runs through the same compiled prompt and one-token step as
generate (mfcore.generation.decoding), batch * num_beams rows.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .config import GenerationConfig
from .decoding import _as_ids, _check_left_padded, _eos_list, _step_function, _zeros, bucket_length, left_pad

NEG = np.float32(-1.0e9)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))).astype(np.float32)


def _topk(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, largest first (ties: lower index first, as torch.topk on CPU)."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


def _gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array (B, K, ...) rows picked per batch by index (B, M)."""
    return np.take_along_axis(array, index.reshape(index.shape + (1,) * (array.ndim - 2)), axis=1)


def beam_search(model, input_ids, generation_config: Optional[GenerationConfig] = None, num_beams: int = 2,
                length_penalty: float = 1.0, early_stopping=False, num_return_sequences: int = 1,
                attention_mask=None, use_jit: bool = True, **kwargs) -> np.ndarray:
    """(batch * num_return_sequences, prompt + generated) int64: the best beams of each prompt, best first."""
    import mindspore
    from mindspore import Tensor

    config = (generation_config or model.generation_config).update(**kwargs)
    if config.do_sample:
        raise ValueError("beam search here is deterministic: do_sample=True with num_beams > 1 is not supported")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be between 1 and num_beams ({num_beams})")
    eos = _eos_list(config.eos_token_id)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    ids = _as_ids(input_ids)
    if isinstance(ids, list):
        ids, mask = left_pad(ids, pad)
    else:
        mask = np.ones_like(ids) if attention_mask is None else _as_ids(attention_mask)
    _check_left_padded(mask)
    batch, prompt = ids.shape
    max_new = config.max_new_tokens if config.max_new_tokens is not None else \
        max(0, (config.max_length or prompt + 20) - prompt)
    if max_new == 0:
        return ids.copy()
    max_length = prompt + max_new
    rows = batch * num_beams
    vocab = model.config.vocab_size
    keep = max(2, 1 + len(eos)) * num_beams
    top_mask = np.arange(keep) < num_beams

    # the model: every prompt num_beams times (rows b * num_beams + j), padded to its bucket as generate does
    padded = bucket_length(prompt)
    cache_length = bucket_length(padded + max_new, minimum=32)
    run_ids = np.repeat(np.concatenate([np.full((batch, padded - prompt), pad, np.int64), ids], 1), num_beams, 0)
    run_mask = np.repeat(np.concatenate([np.zeros((batch, padded - prompt), np.int64), mask], 1), num_beams, 0)
    step = _step_function(model, use_jit)
    caches = [_zeros(shape, dtype) for shape, dtype in model.kv_cache_shapes(rows, cache_length)]
    inputs = model.prepare_inputs_for_generation(run_ids, run_mask, cache_length, 0)
    names = ("input_ids", "position_ids", "attention_bias", "cache_slot")
    logits, *caches = step(*(Tensor(inputs[k]) for k in names), *caches)
    past = padded

    fill = pad if pad is not None else (eos[0] if eos else -1)
    running = np.full((batch, num_beams, max_length), fill, np.int64)
    running[:, :, :prompt] = ids[:, None]
    finished = running.copy()
    running_scores = np.zeros((batch, num_beams), np.float32)
    running_scores[:, 1:] = NEG
    finished_scores = np.full((batch, num_beams), NEG, np.float32)
    finished_lengths = np.zeros((batch, num_beams), np.int64)
    is_finished = np.zeros((batch, num_beams), bool)
    unsatisfied = np.ones((batch, 1), bool)
    cur = prompt
    while True:
        log_probs = _log_softmax(logits.asnumpy().astype(np.float32)).reshape(batch, num_beams, vocab)
        log_probs = (log_probs + running_scores[:, :, None]).reshape(batch, -1)
        top = _topk(log_probs, keep)
        top_scores = np.take_along_axis(log_probs, top, 1)
        source_beam, token = top // vocab, top % vocab
        candidates = _gather(running, source_beam)
        candidates[:, :, cur] = token
        hits = np.isin(token, eos) if eos else np.zeros_like(token, bool)
        if cur + 1 >= max_length:
            hits[:] = True
        # the best num_beams unfinished continuations run on
        live = _topk(top_scores + hits.astype(np.float32) * NEG, num_beams)
        running = _gather(candidates, live)
        running_scores = np.take_along_axis(top_scores + hits.astype(np.float32) * NEG, live, 1)
        parent = np.take_along_axis(source_beam, live, 1) + np.arange(batch)[:, None] * num_beams
        # finished hypotheses among the first num_beams candidates, scored with the length penalty
        just = hits & top_mask[None]
        scored = top_scores / np.float32((cur + 1 - prompt) ** length_penalty)
        full = is_finished.all(-1, keepdims=True) & (early_stopping is True)
        scored = scored + full * NEG + (~unsatisfied) * NEG + (~just) * NEG
        merged_scores = np.concatenate([finished_scores, scored.astype(np.float32)], 1)
        best = _topk(merged_scores, num_beams)
        finished = _gather(np.concatenate([finished, candidates], 1), best)
        finished_scores = np.take_along_axis(merged_scores, best, 1)
        finished_lengths = np.take_along_axis(
            np.concatenate([finished_lengths, np.full((batch, keep), cur + 1 - prompt)], 1), best, 1)
        is_finished = np.take_along_axis(np.concatenate([is_finished, just], 1), best, 1)
        cur += 1
        best_length = max_length - prompt if early_stopping == "never" and length_penalty > 0 else cur - prompt
        best_possible = running_scores[:, :1] / np.float32(best_length ** length_penalty)
        worst = np.where(is_finished, finished_scores.min(1, keepdims=True), NEG)
        unsatisfied = unsatisfied & (best_possible > worst).any(-1, keepdims=True)
        if not (unsatisfied.any() and not (is_finished.all() and early_stopping is True) and not hits.all()):
            break
        # next step: the running beams' last tokens, their parents' cache rows
        order = Tensor(parent.reshape(-1).astype(np.int32))
        caches = [mindspore.ops.gather(c, order, 0) for c in caches]
        run_mask = np.concatenate([run_mask[parent.reshape(-1)], np.ones((rows, 1), np.int64)], 1)
        inputs = model.prepare_inputs_for_generation(running[:, :, cur - 1].reshape(-1, 1), run_mask, cache_length,
                                                     past)
        logits, *caches = step(*(Tensor(inputs[k]) for k in names), *caches)
        past += 1
    length = prompt + int(finished_lengths[:, :num_return_sequences].max())
    return finished[:, :num_return_sequences, :length].reshape(batch * num_return_sequences, length)
