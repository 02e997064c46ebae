"""How the next token is chosen from the logits: pure numpy functions, each equal to the transformers
logits processor / warper of the same name (tested against them)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .config import GenerationConfig

NEG_INF = -np.inf


# All take and return float32 scores of shape (batch, vocab).

def apply_repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's penalty as transformers applies it: every token seen in the row (prompt included)
    gets its score divided by `penalty` when positive, multiplied when negative."""
    if penalty == 1.0:
        return scores
    scores = scores.copy()
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, sequences]
    scores[rows, sequences] = np.where(seen < 0, seen * penalty, seen / penalty)
    return scores


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    return scores if temperature == 1.0 else scores / np.float32(temperature)


def apply_top_k(scores: np.ndarray, top_k: Optional[int]) -> np.ndarray:
    """Keep the k best scores per row (ties with the k-th kept too), -inf elsewhere."""
    if not top_k or top_k >= scores.shape[-1]:
        return scores
    kth = np.partition(scores, -top_k, axis=-1)[:, -top_k][:, None]
    return np.where(scores < kth, NEG_INF, scores).astype(scores.dtype)


def apply_top_p(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filtering: keep the smallest set of best tokens whose probability reaches top_p."""
    if top_p >= 1.0:
        return scores
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as transformers sorts
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(softmax(sorted_scores), axis=-1)
    remove_sorted = cumulative <= 1 - top_p
    remove_sorted[:, -1] = False  # always keep the best token
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, NEG_INF, scores).astype(scores.dtype)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - np.max(scores, axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)


def sample(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row drawn from softmax(scores)."""
    probs = softmax(scores)
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random(scores.shape[0])[:, None] * cumulative[:, -1:]
    return np.minimum((cumulative <= draws).sum(axis=-1), scores.shape[-1] - 1)


def next_tokens(scores: np.ndarray, sequences: np.ndarray, config: GenerationConfig,
                rng: Optional[np.random.Generator]) -> np.ndarray:
    """The next token of every row: processors (repetition penalty), then warpers and sampling, or argmax."""
    scores = apply_repetition_penalty(scores, sequences, config.repetition_penalty)
    if not config.do_sample:
        return np.argmax(scores, axis=-1)
    scores = apply_temperature(scores, config.temperature)
    scores = apply_top_k(scores, config.top_k)
    scores = apply_top_p(scores, config.top_p)
    return sample(scores, rng)
