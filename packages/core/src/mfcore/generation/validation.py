"""Checks of a generate() request against the model, before any graph runs.

A bad request must fail here with a clear error and leave the model usable: an out-of-vocabulary id fed
to a compiled MindSpore graph does not raise a clean error, it breaks the graph for every later call in
the process ("Invalid output number for flatten stub output nodes"). So token ids, the attention mask and
the lengths are checked on the host first. The sampling settings are checked by GenerationConfig.validate.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from mfcore.errors import ConfigError


def context_length(config) -> Optional[int]:
    """The longest sequence (prompt + new tokens) the model config allows, or None when it says nothing."""
    for name in ("max_position_embedding", "max_position_embeddings", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def new_token_count(config, prompt_length: int) -> int:
    """How many tokens generate adds: max_new_tokens, else max_length minus the prompt (never negative)."""
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    return max(0, (config.max_length or prompt_length + 20) - prompt_length)


def check_generation_inputs(model, ids: np.ndarray, mask: np.ndarray, config, pad_token_id: int) -> None:
    """Raise ConfigError naming the first bad token id, or the lengths that do not fit the model's context."""
    if not np.isin(mask, (0, 1)).all():
        raise ConfigError("attention_mask", "must hold only 0 (padding) and 1 (real token)")
    model_config = getattr(model, "config", None)
    vocab = getattr(model_config, "vocab_size", None)
    # Every column reaches the embedding, padding included, so every id must be in range.
    low, high = (0, vocab) if isinstance(vocab, int) and vocab > 0 else (0, None)
    bad = (ids < low) | (ids >= high) if high is not None else ids < low
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        where = f"[0, {high})" if high is not None else ">= 0"
        raise ConfigError("input_ids", f"token id {int(ids[row, column])} (row {row}, position {column}) is "
                                       f"outside this model's vocabulary {where}; {int(bad.sum())} such id(s) "
                                       "in all. Were the ids made by another model's tokenizer?")
    if high is not None and not low <= pad_token_id < high:
        raise ConfigError("pad_token_id", f"{pad_token_id} is outside this model's vocabulary [0, {high})")
    context = context_length(model_config)
    prompt_length = ids.shape[1]
    new = new_token_count(config, prompt_length)
    if context is not None and prompt_length + new > context:
        raise ConfigError("max_new_tokens", f"prompt of {prompt_length} tokens + {new} new tokens = "
                                            f"{prompt_length + new} is past this model's context of {context} "
                                            f"tokens; ask for at most {max(0, context - prompt_length)} new tokens "
                                            "or shorten the prompt")
